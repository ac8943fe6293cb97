"""The eager kernel path of ``routing_attention``: one resolved program per problem.

Eager BRA on BiFormer's maps is bound by its CPU time, not by the GPU (five launches of
20-100 us of GPU work each). A :class:`RoutedProgram` is built once per problem (device, shape,
strides, dtype, region grid, top-k, heads, scale, pointer alignment) and holds the five bound
launches (region means, top-k, forward, dQ, dK/dV) and the layout of one float32 buffer per call
that holds the routing indices, the LSE and the backward's workspace, so a call builds one cache
key, makes two allocations in the forward and one in the backward, and goes straight to the
compiled kernels. The region means, which only the top-k launch reads, live in the output's
memory until the forward kernel overwrites it (when they fit: four or more tokens per region in
16-bit, two in fp32), so a training step does not keep them until the backward. Compiled
launches take raw addresses (the buffer's base plus offsets, ``data_ptr()`` of the tensors;
``launches_direct``): no typed views of the buffer, and no per-pointer driver query in Triton's
launcher. ``_RoutedAttention`` is its autograd node. ``torch.compile`` never comes here: it traces the registered ``foveal::bra_*`` ops,
which run the same kernels through ``region_topk`` and ``block_sparse_attention_forward/backward``
(the same bound launches, cached by problem).
"""
from __future__ import annotations

import functools
import math

import torch

from ..common.block_sparse import _int32, backward_launches, block_sparse_attention_backward, forward_launch
from ..common.tuning import alignment, contiguous_strides, launches_direct, scratch_allocator
from .kernels import topk_launches

__all__ = ["RoutedProgram", "eager_routing_attention", "program_for"]


def _parts(*numels: int) -> tuple[tuple[int, int], ...]:
    """(start, end) of consecutive float32 parts, each starting 16 bytes aligned (the launches
    were specialized for aligned pointers)."""
    spans, start = [], 0
    for n in numels:
        spans.append((start, start + n))
        start += -(-n // 4) * 4
    return tuple(spans)


class RoutedProgram:
    """Routing and token attention of one problem on the kernel path, launches bound.

    ``q, k, v``: [B, Y, X, C] with the strides, dtype, device and 16-byte alignment the program
    was built for; given indices: contiguous int32 [B, R, nk]. The output and the gradients are
    allocated contiguous, which the bound launches assume; everything else lives in one float32
    buffer per call (:meth:`buffer`): int32 indices [B, R, nk], LSE [B, Y, X, heads], the region
    means [2, B, R, C] unless they fit in the output (``means_in_out``) and, for training, the
    backward's workspace."""

    __slots__ = ("shape", "dtype", "device", "tile", "num_heads", "scale", "idx_shape", "lse_shape", "means_shape",
                 "grads_shape", "grad_strides", "means_in_out", "parts", "numel", "mean", "rank", "fwd", "dq", "dkv", "tma")

    def __init__(self, device: int, shape: tuple[int, ...], strides: tuple[tuple[int, ...], ...], dtype: torch.dtype,
                 regions: tuple[int, int], nk: int, num_heads: int, scale: float) -> None:
        B, Y, X, C = shape
        qs, ks, vs = strides
        R = regions[0] * regions[1]
        tile = (Y // regions[0], X // regions[1])
        self.shape, self.dtype, self.tile, self.num_heads, self.scale = shape, dtype, tile, num_heads, scale
        self.device = torch.device("cpu") if device < 0 else torch.device("cuda", device)
        self.idx_shape, self.lse_shape, self.means_shape = (B, R, nk), (B, Y, X, num_heads), (2, B, R, C)
        self.grads_shape = (3, *shape)
        # every pointer below is a fresh allocation or a 16-byte aligned part of one, like q, k,
        # v (the key's alignment is (0,)), so each launch's alignment is (0,) too
        aligned = (0,)
        self.mean, self.rank = topk_launches(device, B, Y, X, C, regions, nk, scale, dtype, dtype, qs, ks, aligned)
        dense = contiguous_strides(shape)
        lse = contiguous_strides(self.lse_shape)
        idx = contiguous_strides(self.idx_shape)[:2]
        self.fwd = forward_launch(device, B, Y, X, C, tile, R, nk, num_heads, dtype, scale,
                                  (*qs, *ks, *vs, *dense, *lse, *idx), aligned)
        # grad_out, dq, dk, dv contiguous (dq/dk/dv are views of one [3, B, Y, X, C] buffer)
        self.dq, self.dkv, ws_numel = backward_launches(
            device, B, Y, X, C, tile, R, nk, num_heads, dtype, scale, (qs, ks, vs, dense, dense, dense, dense, dense,
                                                                        lse, idx), aligned)
        self.grad_strides = dense
        # maps one region high take the core's sequence path, whose TMA loads need an allocator
        self.tma = any(launch.meta["TMA"] for launch in (self.fwd, self.dq, self.dkv))
        means = 2 * B * R * C
        self.means_in_out = B * Y * X * C * dtype.itemsize // 4 >= means
        self.parts = _parts(B * R * nk, B * Y * X * num_heads, 0 if self.means_in_out else means, ws_numel)
        # inference needs no workspace
        self.numel = (self.parts[2][1], self.parts[3][1])

    def buffer(self, train: bool) -> torch.Tensor:
        """A call's float32 buffer: indices, LSE, the means unless they fit in the output, and the
        workspace when ``train``."""
        return torch.empty(self.numel[train], device=self.device, dtype=torch.float32)

    def indices(self, buf: torch.Tensor) -> torch.Tensor:
        """The routed region ids in ``buf``: int32 [B, R, nk] (a view)."""
        start, end = self.parts[0]
        return buf[start:end].view(torch.int32).view(self.idx_shape)

    def _views(self, buf: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(indices, LSE, means, workspace) as typed views of ``buf`` (the means of ``out``'s memory
        when they live there), for launches that go through :meth:`Launcher.launch` (not compiled
        yet, the interpreter, launch hooks)."""
        (_, _), (l0, l1), (m0, m1), (w0, w1) = self.parts
        if out is None:
            means = None
        elif self.means_in_out:
            flat = out.view(-1)
            if flat.element_size() != 4:
                flat = flat[:flat.numel() // 2 * 2].view(torch.float32)
            means = flat[:math.prod(self.means_shape)].view(self.means_shape)
        else:
            means = buf[m0:m1].view(self.means_shape)
        return (self.indices(buf), buf[l0:l1].view(self.lse_shape), means,
                buf[w0:w1] if buf.numel() >= w1 else None)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor | None,
                buf: torch.Tensor) -> torch.Tensor:
        """out [B, Y, X, C]; routes into ``buf`` first when ``idx`` is None, else attends to the
        given int32 [B, R, nk] ids. The natural-log LSE lands in ``buf``."""
        out = torch.empty(self.shape, device=self.device, dtype=self.dtype)
        route = idx is None
        if self.tma:
            scratch_allocator()
        if launches_direct(self.mean, self.rank, self.fwd) if route else launches_direct(self.fwd):
            base, po = buf.data_ptr(), out.data_ptr()
            pq, pk = q.data_ptr(), k.data_ptr()
            if route:
                pi, pm = base + 4 * self.parts[0][0], po if self.means_in_out else base + 4 * self.parts[2][0]
                self.mean(pq, pk, pm)
                self.rank(pm, pi)
            else:
                pi = idx.data_ptr()
            self.fwd(pq, pk, v.data_ptr(), po, base + 4 * self.parts[1][0], pi, pi)   # no visit order
            return out
        ids, lse, means, _ = self._views(buf, out)
        if route:
            self.mean(q, k, means)
            self.rank(means, ids)
        self.fwd(q, k, v, out, lse, *(ids if route else idx,) * 2)
        return out

    def backward(self, grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                 idx: torch.Tensor | None, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dq, dk, dv): views of one allocation, so only for an eager autograd node (a registered
        op's outputs must not alias). ``idx`` None: the ids in ``buf``."""
        dq, dk, dv = torch.empty(self.grads_shape, device=self.device, dtype=self.dtype).unbind(0)
        if self.tma:
            scratch_allocator()
        if grad_out.stride() != self.grad_strides or grad_out.data_ptr() & 15:
            grad_out = grad_out.contiguous()
            if grad_out.stride() != self.grad_strides or grad_out.data_ptr() & 15:   # odd strides of size-1 dims
                ids, lse, _, _ = self._views(buf)
                return block_sparse_attention_backward(grad_out, q, k, v, out, lse, ids if idx is None else idx,
                                                       self.tile, self.num_heads, self.scale, dq=dq, dk=dk, dv=dv)
        if launches_direct(self.dq, self.dkv):
            base = buf.data_ptr()
            pq, pk, pv, pg = q.data_ptr(), k.data_ptr(), v.data_ptr(), grad_out.data_ptr()
            pw = base + 4 * self.parts[3][0]
            pi = base + 4 * self.parts[0][0] if idx is None else idx.data_ptr()
            pl = base + 4 * self.parts[1][0]
            self.dq(pq, pk, pv, out.data_ptr(), pg, dq.data_ptr(), pl, pl, pw, pi, pi)   # no LSE gradient, no order
            self.dkv(pq, pk, pv, pg, dk.data_ptr(), dv.data_ptr(), pw, pw)
            return dq, dk, dv
        ids, lse, _, ws = self._views(buf)
        self.dq(q, k, v, out, grad_out, dq, lse, lse, ws, *(ids if idx is None else idx,) * 2)
        self.dkv(q, k, v, grad_out, dk, dv, ws, ws)
        return dq, dk, dv


@functools.lru_cache(maxsize=64)
def _program(*key) -> RoutedProgram:
    return RoutedProgram(*key)


def program_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, regions: tuple[int, int], nk: int,
                num_heads: int, scale: float) -> RoutedProgram | None:
    """The program of this call, or None when q, k or v is not 16-byte aligned (rare: an odd
    offset view), which the generic launches handle."""
    if alignment(q, k, v) != (0,):
        return None
    return _program(q.get_device(), q.shape, (q.stride(), k.stride(), v.stride()), q.dtype, regions, nk, num_heads,
                    scale)


class _RoutedAttention(torch.autograd.Function):
    """The eager kernel path's autograd node: the program's kernels, called directly. The call's
    buffer (indices, LSE, workspace) is private to the node, so it rides on ``ctx`` rather than
    through ``save_for_backward`` (fewer saved tensors to pack and unpack); given indices are
    the caller's and are saved, so that changing them in place before the backward is caught."""

    @staticmethod
    def forward(ctx, q, k, v, idx, program, buf):
        out = program.forward(q, k, v, idx, buf)
        if idx is None:
            ctx.save_for_backward(q, k, v, out)
        else:
            ctx.save_for_backward(q, k, v, out, idx)
        ctx.program, ctx.buf = program, buf
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, *idx = ctx.saved_tensors
        grads = ctx.program.backward(grad_out, q, k, v, out, idx[0] if idx else None, ctx.buf)
        return (*grads, None, None, None)


def eager_routing_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, regions: tuple[int, int], topk: int,
                            num_heads: int, scale: float, indices: torch.Tensor | None, return_indices: bool = False):
    """(out, int32 indices or None) of routed attention on the kernel path, outside
    ``torch.compile``; ``indices`` None routes with the kernels (R <= 256), else they are used as
    given. The indices come back only with ``return_indices``. None when no program fits
    (misaligned inputs): the caller takes the registered ops' path."""
    nk = topk if indices is None else indices.shape[2]
    program = program_for(q, k, v, regions, nk, num_heads, scale)
    if program is None:
        return None
    idx = None if indices is None else _int32(indices)
    train = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    buf = program.buffer(train)
    if train:
        out = _RoutedAttention.apply(q, k, v, idx, program, buf)
    else:
        out = program.forward(q, k, v, idx, buf)
    if not return_indices:
        return out, None
    return out, program.indices(buf) if idx is None else idx
