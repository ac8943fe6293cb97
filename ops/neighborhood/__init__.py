"""Neighborhood attention (NA / GNA) with NATTEN's semantics, heads-last layout.

``neighborhood_attention(q, k, v, kernel_size, ...)`` takes ``[B, *spatial, H, D]`` with 1-3
spatial axes; ``na1d`` / ``na2d`` / ``na3d`` are thin aliases that also check the rank.
CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``) run the Triton kernels in
``kernels.py``; anything else runs ``reference.py``. Eager calls on the kernel path run a program
resolved once per problem (``eager.py``: bound launches) under a lean ``autograd.Function``
(``_NeighborhoodAttention``); ``torch.compile`` traces the registered ``foveal::na_*`` ops instead.
"""
from __future__ import annotations

import torch

from ..common import eager_autograd, op_name, op_or_impl, use_kernels
from .checks import NAParams, check_na_args
from .reference import (neighborhood_attention_reference, neighborhood_attention_reference_backward,
                        neighborhood_mask)

__all__ = ["na1d", "na2d", "na3d", "neighborhood_attention", "neighborhood_attention_reference",
           "neighborhood_mask"]


def _na_forward_impl(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kernel_size: list[int],
                dilation: list[int], stride: list[int], is_causal: list[bool], scale: float,
                additional_keys: torch.Tensor | None, additional_values: torch.Tensor | None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    p = NAParams(tuple(kernel_size), tuple(dilation), tuple(stride), tuple(is_causal), scale)
    if use_kernels(query, key, value, additional_keys, additional_values):
        from .kernels import na_forward
        return na_forward(query, key, value, p.kernel_size, p.dilation, p.stride, p.is_causal, scale,
                          additional_keys, additional_values)
    out, lse = neighborhood_attention_reference(query, key, value, p.kernel_size, p.dilation, p.stride,
                                                p.is_causal, scale, additional_keys, additional_values)
    return out.contiguous(), lse.contiguous()   # the fake impl promises contiguous outputs


_na_forward = torch.library.custom_op(op_name("na_forward"), _na_forward_impl, mutates_args=())


@_na_forward.register_fake
def _(query, key, value, kernel_size, dilation, stride, is_causal, scale, additional_keys,
      additional_values):
    out = query.new_empty((*query.shape[:-1], value.shape[-1]))
    lse_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    return out, query.new_empty(query.shape[:-1], dtype=lse_dtype)


def _na_backward_impl(grad_out: torch.Tensor, grad_lse: torch.Tensor | None, query: torch.Tensor,
                 key: torch.Tensor, value: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                 kernel_size: list[int], dilation: list[int],
                 stride: list[int], is_causal: list[bool], scale: float,
                 additional_keys: torch.Tensor | None, additional_values: torch.Tensor | None,
                 ) -> list[torch.Tensor]:
    if use_kernels(query, key, value, additional_keys, additional_values):
        from .kernels import na_backward
        return list(na_backward(grad_out, grad_lse, query, key, value, out, lse, tuple(kernel_size),
                                tuple(dilation), tuple(stride), tuple(is_causal), scale,
                                additional_keys, additional_values))
    grads = neighborhood_attention_reference_backward(
        grad_out, grad_lse, query, key, value, tuple(kernel_size), tuple(dilation), tuple(stride),
        tuple(is_causal), scale, additional_keys, additional_values)
    return [g.contiguous() for g in grads if g is not None]


_na_backward = torch.library.custom_op(op_name("na_backward"), _na_backward_impl, mutates_args=())
_na_backward_call = op_or_impl(_na_backward, _na_backward_impl)


@_na_backward.register_fake
def _(grad_out, grad_lse, query, key, value, out, lse, kernel_size, dilation, stride, is_causal, scale,
      additional_keys, additional_values):
    tensors = [query, key, value] + [t for t in (additional_keys, additional_values) if t is not None]
    return [torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors]


def _setup_context(ctx, inputs, output):
    (query, key, value, kernel_size, dilation, stride, is_causal, scale, extra_k, extra_v) = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, extra_k, extra_v, out, lse)
    ctx.params = (kernel_size, dilation, stride, is_causal, scale)


def _backward(ctx, grad_out, grad_lse):
    query, key, value, extra_k, extra_v, out, lse = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()   # only lse was used
    grads = _na_backward_call(grad_out, grad_lse, query, key, value, out, lse, *ctx.params, extra_k, extra_v)
    dq, dk, dv, *dextra = grads
    dek, dev = dextra if dextra else (None, None)
    return dq, dk, dv, None, None, None, None, None, dek, dev


_na_forward.register_autograd(_backward, setup_context=_setup_context)
_na_call = eager_autograd(_na_forward, _na_forward_impl, _setup_context, _backward)


def neighborhood_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int | tuple[int, ...],
    dilation: int | tuple[int, ...] = 1,
    stride: int | tuple[int, ...] = 1,
    is_causal: bool | tuple[bool, ...] = False,
    scale: float | None = None,
    additional_keys: torch.Tensor | None = None,
    additional_values: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Neighborhood attention over 1-3 spatial axes (NATTEN semantics).

    Args:
        query: [B, *spatial, H, D]. key: [B, *spatial, Hkv, D]. value: [B, *spatial, Hkv, Dv],
            H a multiple of Hkv.
        kernel_size, dilation, stride, is_causal: an int/bool or one value per spatial axis.
        scale: softmax scale, default D ** -0.5.
        additional_keys / additional_values: [B, N_extra, Hkv, D] / [B, N_extra, Hkv, Dv],
            attended by every query in the same softmax.
        return_lse: also return the natural-log sum-exp [B, *spatial, H] in float32.
    Returns:
        output [B, *spatial, H, Dv] (and lse when ``return_lse``).
    """
    p = check_na_args(query, key, value, kernel_size, dilation, stride, is_causal, scale,
                      additional_keys, additional_values)
    return _checked_call(p, query, key, value, additional_keys, additional_values, return_lse)


_KERNELS = None


def _kernels():
    """(na_forward, program_for), imported on first use (Triton may be missing on CPU-only
    installs) and then kept: eager calls on small maps are bound by their CPU time."""
    global _KERNELS
    if _KERNELS is None:
        from .eager import program_for
        from .kernels import na_forward
        _KERNELS = na_forward, program_for
    return _KERNELS


class _NeighborhoodAttention(torch.autograd.Function):
    """The eager kernel path's autograd node: the problem's program (``eager.py``: bound launches)
    called directly, without the generic dispatch of ``_na_call`` (custom-op wrappers, list
    arguments rebuilt into tuples, per-launch site keys), whose CPU time small maps are bound by."""

    @staticmethod
    def forward(ctx, query, key, value, extra_k, extra_v, program):
        ctx.set_materialize_grads(False)
        out, lse = program.forward(query, key, value, extra_k, extra_v)
        ctx.save_for_backward(query, key, value, extra_k, extra_v, out, lse)
        ctx.program = program
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        query, key, value, extra_k, extra_v, out, lse = ctx.saved_tensors
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out   # only lse was used
        dq, dk, dv, *dextra = ctx.program.backward(grad_out, grad_lse, query, key, value, extra_k, extra_v, out, lse)
        dek, dev = dextra if dextra else (None, None)
        return dq, dk, dv, dek, dev, None


def _checked_call(p: NAParams, query, key, value, additional_keys, additional_values, return_lse):
    program = None
    if not torch.compiler.is_compiling() and use_kernels(query, key, value, additional_keys, additional_values):
        program = _kernels()[1](query, key, value, additional_keys, additional_values, p)
    if program is not None:
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in
                                           (query, key, value, additional_keys, additional_values)):
            out, lse = _NeighborhoodAttention.apply(query, key, value, additional_keys, additional_values, program)
        else:   # nothing to differentiate: no autograd node, no saved tensors
            out, lse = program.forward(query, key, value, additional_keys, additional_values)
    else:   # torch.compile traces the registered op; the reference and odd views run through it too
        out, lse = _na_call(query, key, value, list(p.kernel_size), list(p.dilation), list(p.stride),
                            list(p.is_causal), p.scale, additional_keys, additional_values)
    return (out, lse) if return_lse else out


def _aliased(rank: int):
    def na(query, key, value, kernel_size, dilation=1, stride=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, return_lse=False):
        p = check_na_args(query, key, value, kernel_size, dilation, stride, is_causal, scale,
                          additional_keys, additional_values, rank=rank)   # checked once, with the rank
        return _checked_call(p, query, key, value, additional_keys, additional_values, return_lse)
    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = f"{rank}-D neighborhood attention: ``neighborhood_attention`` on [B, *{rank} axes, H, D]."
    return na


na1d, na2d, na3d = _aliased(1), _aliased(2), _aliased(3)
