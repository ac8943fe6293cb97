"""The eager kernel path of ``routing_attention``: one resolved program per problem.

Eager BRA on BiFormer's maps is bound by its CPU time, not by the GPU (five launches of
20-100 us of GPU work each). A :class:`RoutedProgram` is built once per problem (device, shape,
strides, dtype, region grid, top-k, heads, scale, pointer alignment) and holds the five bound
launches (region means, top-k, forward, dQ, dK/dV) and the sizes of their buffers, so a call
builds one cache key instead of one per launch and goes straight to the compiled kernels.
``_RoutedAttention`` is its autograd node. ``torch.compile`` never comes here: it traces the
registered ``foveal::bra_*`` ops, which run the same kernels through ``region_topk`` and
``block_sparse_attention_forward/backward`` (the same bound launches, cached by problem).
"""
from __future__ import annotations

import functools

import torch

from ..common.block_sparse import _int32, backward_launches, block_sparse_attention_backward, forward_launch
from ..common.tuning import alignment, contiguous_strides
from .kernels import topk_launches

__all__ = ["RoutedProgram", "eager_routing_attention", "program_for"]


class RoutedProgram:
    """Routing and token attention of one problem on the kernel path, launches bound.

    ``q, k, v``: [B, Y, X, C] with the strides, dtype, device and 16-byte alignment the program
    was built for; indices: contiguous int32 [B, R, nk]. Outputs, LSE and gradients are
    allocated contiguous, which the bound launches assume."""

    __slots__ = ("shape", "dtype", "mean", "rank", "means_shape", "idx_shape", "lse_shape", "fwd", "dq", "dkv",
                 "ws_numel", "grad_strides", "tile", "num_heads", "scale")

    def __init__(self, device: int, shape: tuple[int, ...], strides: tuple[tuple[int, ...], ...], dtype: torch.dtype,
                 regions: tuple[int, int], nk: int, num_heads: int, scale: float) -> None:
        B, Y, X, C = shape
        qs, ks, vs = strides
        R = regions[0] * regions[1]
        tile = (Y // regions[0], X // regions[1])
        self.shape, self.dtype, self.tile, self.num_heads, self.scale = shape, dtype, tile, num_heads, scale
        self.means_shape, self.idx_shape, self.lse_shape = (2, B, R, C), (B, R, nk), (B, Y, X, num_heads)
        # every buffer below is a fresh allocation (16-byte aligned), like q, k, v (the key's
        # alignment is (0,)), so each launch's alignment is (0,) too
        aligned = (0,)
        self.mean, self.rank = topk_launches(device, B, Y, X, C, regions, nk, scale, dtype, dtype, qs, ks, aligned)
        dense = contiguous_strides(shape)
        lse = contiguous_strides(self.lse_shape)
        idx = contiguous_strides(self.idx_shape)[:2]
        self.fwd = forward_launch(device, B, Y, X, C, tile, R, nk, num_heads, dtype, scale,
                                  (*qs, *ks, *vs, *dense, *lse, *idx), aligned)
        # grad_out, dq, dk, dv contiguous (dq/dk/dv are views of one [3, B, Y, X, C] buffer)
        self.dq, self.dkv, self.ws_numel = backward_launches(
            device, B, Y, X, C, tile, R, nk, num_heads, dtype, scale, (qs, ks, vs, dense, dense, dense, dense, dense,
                                                                        lse, idx), aligned)
        self.grad_strides = dense

    def route(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """int32 [B, R, nk] routed region ids (``region_topk``)."""
        means = torch.empty(self.means_shape, device=q.device, dtype=torch.float32)
        idx = torch.empty(self.idx_shape, device=q.device, dtype=torch.int32)
        self.mean(q, k, means)
        self.rank(means, idx)
        return idx

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(out [B, Y, X, C], natural-log LSE [B, Y, X, heads] float32)."""
        out = torch.empty(self.shape, device=q.device, dtype=self.dtype)
        lse = torch.empty(self.lse_shape, device=q.device, dtype=torch.float32)
        self.fwd(q, k, v, out, lse, idx)
        return out, lse

    def backward(self, grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                 lse: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dq, dk, dv): views of one allocation, so only for an eager autograd node (a registered
        op's outputs must not alias)."""
        dq, dk, dv = torch.empty((3, *self.shape), device=q.device, dtype=self.dtype).unbind(0)
        if grad_out.stride() != self.grad_strides or grad_out.data_ptr() & 15:
            grad_out = grad_out.contiguous()
            if grad_out.stride() != self.grad_strides or grad_out.data_ptr() & 15:   # odd strides of size-1 dims
                return block_sparse_attention_backward(grad_out, q, k, v, out, lse, idx, self.tile, self.num_heads,
                                                       self.scale, dq=dq, dk=dk, dv=dv)
        ws = torch.empty(self.ws_numel, device=q.device, dtype=torch.float32)
        self.dq(q, k, v, out, grad_out, dq, lse, ws, idx)
        self.dkv(q, k, v, grad_out, dk, dv, ws)
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
    """The eager kernel path's autograd node: the program's kernels, called directly."""

    @staticmethod
    def forward(ctx, q, k, v, idx, program):
        out, lse = program.forward(q, k, v, idx)
        ctx.save_for_backward(q, k, v, idx, out, lse)
        ctx.program = program
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, idx, out, lse = ctx.saved_tensors
        return (*ctx.program.backward(grad_out, q, k, v, out, lse, idx), None, None)


def eager_routing_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, regions: tuple[int, int], topk: int,
                            num_heads: int, scale: float, indices: torch.Tensor | None):
    """(out, int32 indices) of routed attention on the kernel path, outside ``torch.compile``;
    ``indices`` None routes with the kernels (R <= 256), else they are used as given. None when
    no program fits (misaligned inputs): the caller takes the registered ops' path."""
    nk = topk if indices is None else indices.shape[2]
    program = program_for(q, k, v, regions, nk, num_heads, scale)
    if program is None:
        return None
    idx = program.route(q, k) if indices is None else _int32(indices)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _RoutedAttention.apply(q, k, v, idx, program), idx
    return program.forward(q, k, v, idx)[0], idx
