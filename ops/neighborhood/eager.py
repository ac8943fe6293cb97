"""The eager kernel path of ``neighborhood_attention``: one resolved program per problem.

NA on a backbone's small maps is bound by its CPU time: the kernels run 20-150 us, and each call
rebuilt its launches' site keys (strides of every tensor, pointer alignment, the problem tuple)
before reaching the compiled kernels. An :class:`NAProgram` is built once per problem (device,
shapes, strides, dtype, window parameters, extra keys) and holds the bound forward launch and the
bound backward launches (dQ, dK/dV, extra KV), so an eager call builds one cache key and goes
straight to the compiled kernels. The launches and their sites are those ``na_forward`` and
``na_backward`` use, so both paths share compiled kernels and autotuning choices.
``torch.compile`` never comes here: it traces the registered ``foveal::na_*`` ops.
"""
from __future__ import annotations

import functools
import math

import torch

from ..common import check_span
from ..common.tuning import alignment, contiguous_strides, scratch_allocator, wide_offsets
from . import kernels as _kernels
from .checks import NAParams
from .kernels import (_bwd_launch, _fwd_launch, _na_bwd_dkv, _na_bwd_dq, _na_bwd_extra_kv, _na_fwd, _padded_shape,
                      _s5_of, _tma, _walk, na_backward)

__all__ = ["NAProgram", "program_for"]

_ALIGNED = (0,)   # ``alignment`` of tensors that are all 16-byte aligned (fresh allocations are)


class NAProgram:
    """Forward and backward of one NA problem on the kernel path, launches bound.

    Built for q [B, *spatial, H, D], k [.., Hkv, D], v [.., Hkv, Dv] and optional extra keys /
    values [B, N_extra, Hkv, D / Dv] with the strides, dtype, device and 16-byte alignment it
    was made for (last dims contiguous). Outputs, LSE and gradients are allocated contiguous,
    which the bound launches assume."""

    __slots__ = ("p", "dtype", "out_shape", "lse_shape", "shapes", "grad_strides",
                 "lse_strides", "fwd", "dq", "dkv", "extra", "grad_buffer", "tma")

    def __init__(self, device: int, shapes: tuple[tuple[int, ...], ...], strides: tuple[tuple[int, ...], ...],
                 dtype: torch.dtype, p: NAParams) -> None:
        for name, shape, st in zip(("query", "key", "value", "additional_keys", "additional_values"), shapes, strides):
            check_span(name, shape, st)
        q_shape, k_shape, v_shape = shapes[:3]
        has_extra = len(shapes) == 5
        n_extra = shapes[3][1] if has_extra else 0
        self.dtype, self.p, self.shapes = dtype, p, shapes
        problem = (q_shape, k_shape[-2], v_shape[-1], p.kernel_size, p.dilation, p.stride, p.is_causal, n_extra,
                   dtype)
        self.out_shape = (*q_shape[:-1], v_shape[-1])
        self.lse_shape = q_shape[:-1]
        self.grad_strides = contiguous_strides(self.out_shape)   # what grad_out must have (out's strides)
        self.lse_strides = contiguous_strides(self.lse_shape)
        check_span("out", self.out_shape, self.grad_strides)
        sq, sk, sv = (_s5_of(s, 2) for s in strides[:3])
        se = (*strides[3][:3], *strides[4][:3]) if has_extra else (0,) * 6
        so, sl = _s5_of(self.grad_strides, 2), _s5_of(self.lse_strides, 1)
        # 64-bit batch offsets when a launch's tensors reach 2**31 elements, decided as na_forward
        # and na_backward do (inputs as given; outputs, LSE and gradients contiguous)
        given = tuple(zip(shapes, strides))
        made = ((self.out_shape, self.grad_strides), (self.lse_shape, self.lse_strides))
        grads = tuple((sh, contiguous_strides(sh)) for sh in shapes)
        wide = wide_offsets(*given, *made, *grads)
        # TMA walks: decided as na_forward and na_backward do (the tensors are all aligned here)
        shape3 = _padded_shape(q_shape)
        dims = (q_shape[-1], v_shape[-1])
        walk = functools.partial(_walk, *problem[:7], boxes=None)
        fwd_tma = _tma(device, dtype, shape3, dims, (sk, sv), True, walk("fwd"))
        dq_tma = _tma(device, dtype, shape3, dims, (sk, sv), True, walk("dq"))
        dkv_tma = _tma(device, dtype, shape3, dims, (sq, so), True, walk("dkv"))   # grad_out has out's strides
        self.tma = fwd_tma or dq_tma or dkv_tma
        # forward: the launch and site key na_forward builds for these tensors
        grid, args, meta = _fwd_launch(*problem, p.scale, None)
        meta = {**meta, "WIDE": wide_offsets(*given, *made), "TMA": fwd_tma}
        fwd_strides = (*sq, *sk, *sv, *se, *so, *sl)
        site = (device, *problem, None, dtype, torch.float32, fwd_strides, _ALIGNED, fwd_tma)
        self.fwd = _na_fwd.bind(site, grid, (*fwd_strides, *args), meta)
        # backward: gradients contiguous, as one [3, ...] allocation when q, k and v have one shape
        # (its views stay 16-byte aligned when a gradient's size is a multiple of 16 bytes)
        self.grad_buffer = q_shape == k_shape == v_shape and math.prod(q_shape) * dtype.itemsize % 16 == 0
        sdq, sdk, sdv = (_s5_of(contiguous_strides(s), 2) for s in shapes[:3])
        dq_strides = (*sq, *sk, *sv, *se, *so, *so, *sl, *sdq)   # grad_out has out's strides
        self.dq = {}   # has a dLSE -> bound dQ launch (the kernel differs)
        for has_dlse in (False, True):
            dq_grid, dq_args, dq_meta = _bwd_launch(*problem, p.scale, has_dlse, None)[:3]
            dq_meta = {**dq_meta, "WIDE": wide, "TMA": dq_tma}
            site = (device, *problem, has_dlse, None, dtype, dtype, sq, sk, sv, so, sl, dtype, dq_strides,
                    _ALIGNED, dq_tma)
            self.dq[has_dlse] = _na_bwd_dq.bind(site, dq_grid, (*dq_strides, *dq_args), dq_meta)
        _, _, _, dkv_grid, dkv_args, dkv_meta, extra = _bwd_launch(*problem, p.scale, False, None)
        dkv_meta = {**dkv_meta, "WIDE": wide, "TMA": dkv_tma}
        bwd_site = (device, *problem, False, None, dtype, dtype, sq, sk, sv, so, sl)
        dkv_strides = (*sdk, *sdv)
        self.dkv = _na_bwd_dkv.bind((*bwd_site, dtype, dtype, dkv_strides, _ALIGNED, dkv_tma), dkv_grid,
                                    (*sq, *sk, *sv, *so, *sl, *dkv_strides, *dkv_args), dkv_meta)
        self.extra = None
        if extra is not None:   # extra keys given and not empty
            grid, args, meta = extra
            meta = {**meta, "WIDE": wide}
            sde = (*contiguous_strides(shapes[3])[:3], *contiguous_strides(shapes[4])[:3])
            ex_strides = (*se, *sde)
            self.extra = _na_bwd_extra_kv.bind((*bwd_site, dtype, dtype, ex_strides, _ALIGNED), grid,
                                               (*sq, *se, *so, *sl, *sde, *args), meta)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ek: torch.Tensor | None,
                ev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(out [B, *spatial, H, Dv], natural-log LSE [B, *spatial, H] float32)."""
        if self.tma:
            scratch_allocator()
        out = torch.empty(self.out_shape, device=q.device, dtype=self.dtype)
        lse = torch.empty(self.lse_shape, device=q.device, dtype=torch.float32)
        self.fwd(q, k, v, k if ek is None else ek, v if ev is None else ev, out, lse)
        return out, lse

    def backward(self, grad_out: torch.Tensor, grad_lse: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor, ek: torch.Tensor | None, ev: torch.Tensor | None, out: torch.Tensor,
                 lse: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(dq, dk, dv[, d extra k, d extra v]); dq/dk/dv may be views of one allocation, so only
        for an eager autograd node (a registered op's outputs must not alias)."""
        g = _laid_out(grad_out, self.grad_strides)
        gl = None if grad_lse is None else _laid_out(grad_lse.float(), self.lse_strides)
        if g is None or (grad_lse is not None and gl is None):   # odd strides of size-1 dims
            p = self.p
            return na_backward(grad_out, grad_lse, q, k, v, out, lse, p.kernel_size, p.dilation, p.stride,
                               p.is_causal, p.scale, ek, ev)
        grad_out, grad_lse = g, gl
        if self.tma:
            scratch_allocator()
        if self.grad_buffer:
            dq, dk, dv = torch.empty((3, *self.shapes[0]), device=q.device, dtype=self.dtype).unbind(0)
        else:
            dq, dk, dv = (torch.empty(s, device=q.device, dtype=self.dtype) for s in self.shapes[:3])
        ld = torch.empty((*self.lse_shape, 2), device=q.device, dtype=torch.float32)   # (log2 LSE, delta) pairs
        has_dlse = grad_lse is not None
        self.dq[has_dlse](q, k, v, k if ek is None else ek, v if ev is None else ev, out, grad_out, lse,
                          grad_lse if has_dlse else lse, ld, dq)
        self.dkv(q, k, v, grad_out, ld, dk, dv)
        if self.extra is None:   # no extra keys, or zero of them (their gradients: None)
            return dq, dk, dv
        dek = torch.empty(self.shapes[3], device=q.device, dtype=self.dtype)
        dev = torch.empty(self.shapes[4], device=q.device, dtype=self.dtype)
        self.extra(q, ek, ev, grad_out, ld, dek, dev)
        return dq, dk, dv, dek, dev


def _laid_out(t: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor | None:
    """``t`` with these (contiguous) strides and 16-byte aligned, copied if need be; None when even
    the copy differs (``contiguous`` keeps odd strides on size-1 dims)."""
    if t.stride() == strides and not t.data_ptr() & 15:
        return t
    t = t.contiguous()
    return t if t.stride() == strides and not t.data_ptr() & 15 else None


@functools.lru_cache(maxsize=128)
def _program(*key) -> NAProgram:
    return NAProgram(*key[:-2])   # the last two: the TMA switch and threshold at build time (tests set them)


def program_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ek: torch.Tensor | None,
                ev: torch.Tensor | None, p: NAParams) -> NAProgram | None:
    """The program of this (validated) call, or None when a tensor's last dim is strided or a
    pointer is not 16-byte aligned (odd views), which ``na_forward`` / ``na_backward`` handle."""
    tensors = (q, k, v) if ek is None else (q, k, v, ek, ev)
    if alignment(*tensors) != _ALIGNED or any(t.stride(-1) != 1 for t in tensors):
        return None
    return _program(q.get_device(), tuple(t.shape for t in tensors), tuple(t.stride() for t in tensors), q.dtype, p,
                    _kernels.USE_TMA, _kernels.TMA_MIN_WALK)
