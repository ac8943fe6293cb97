"""Gated linear attention (GLA, ViG's BiGLA): causal, reverse and bidirectional, chunked Triton kernels.

``gated_linear_attention(query, key, value, gate, scale=None, direction="causal", reverse_gate=None)``
on heads-last ``[B, T, H, K]`` tensors, fla's ``chunk_gla`` layout. CUDA tensors (or CPU under
``TRITON_INTERPRET=1``) run ``kernels.py`` forward and backward, both directions of a
bidirectional call in the same launches; float64 and other devices run ``reference.py``.
"""
from __future__ import annotations

import torch

from ..common import (check_floating, check_item_span, check_rank, check_same_device, check_same_dtype,
                      eager_autograd, op_name, op_or_impl, use_kernels)
from .reference import DIRECTIONS, gated_linear_attention_reference, gla_recurrent_reference

__all__ = ["gated_linear_attention", "gated_linear_attention_reference", "gla_recurrent_reference"]

MAX_HEAD_DIM = 128   # the kernels hold a chunk's whole key and value heads in registers


def _last_dim_unit(t: torch.Tensor | None) -> torch.Tensor | None:
    """Kernels read any batch/token/head strides but need unit stride along the channels."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _gla_forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gf: torch.Tensor | None,
                      gb: torch.Tensor | None, scale: float) -> list[torch.Tensor]:
    from .kernels import gla_forward
    o, hs = gla_forward(q, k, v, gf, gb, scale)
    return [o, hs]


_gla_forward = torch.library.custom_op(op_name("gla_forward"), _gla_forward_impl, mutates_args=())


@_gla_forward.register_fake
def _(q, k, v, gf, gb, scale):
    B, T, H, K = q.shape
    ndir = (gf is not None) + (gb is not None)
    return [q.new_empty(B, T, H, v.shape[-1]), q.new_empty(ndir, B, H, -(-T // 64), K, v.shape[-1])]


def _gla_backward_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gf: torch.Tensor | None,
                       gb: torch.Tensor | None, hs: torch.Tensor, scale: float) -> list[torch.Tensor]:
    from .kernels import gla_backward
    dq, dk, dv, dgf, dgb = gla_backward(do, q, k, v, gf, gb, hs, scale)
    return [dq, dk, dv] + [g for g in (dgf, dgb) if g is not None]


_gla_backward = torch.library.custom_op(op_name("gla_backward"), _gla_backward_impl, mutates_args=())
_gla_backward_call = op_or_impl(_gla_backward, _gla_backward_impl)


@_gla_backward.register_fake
def _(do, q, k, v, gf, gb, hs, scale):
    return [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)] + [
        torch.empty_like(g) for g in (gf, gb) if g is not None]


def _setup_context(ctx, inputs, output):
    q, k, v, gf, gb, scale = inputs
    ctx.save_for_backward(q, k, v, gf, gb, output[1])
    ctx.scale = scale


def _backward(ctx, grads):
    do = grads[0]
    q, k, v, gf, gb, hs = ctx.saved_tensors
    if do is None:
        return None, None, None, None, None, None
    grads = _gla_backward_call(do.contiguous(), q, k, v, gf, gb, hs, ctx.scale)
    dq, dk, dv, rest = grads[0], grads[1], grads[2], list(grads[3:])
    dgf = rest.pop(0) if gf is not None else None
    dgb = rest.pop(0) if gb is not None else None
    return dq, dk, dv, dgf, dgb, None


_gla_forward.register_autograd(_backward, setup_context=_setup_context)
_gla_call = eager_autograd(_gla_forward, _gla_forward_impl, _setup_context, _backward)


def _check(query, key, value, gate, reverse_gate, direction, scale):
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    named = dict(query=query, key=key, value=value, gate=gate, reverse_gate=reverse_gate)
    for name, t in named.items():
        if t is None and name == "reverse_gate":
            continue
        check_floating(t, name)
        check_rank(t, name, (4,), "[B, T, H, D]")
    if key.shape != query.shape:
        raise ValueError(f"key must have query's shape {tuple(query.shape)}, got {tuple(key.shape)}")
    if value.shape[:3] != query.shape[:3]:
        raise ValueError(f"value [B, T, H, V] must match query's B, T, H {tuple(query.shape[:3])}, "
                         f"got {tuple(value.shape)}")
    for name in ("gate", "reverse_gate"):
        t = named[name]
        if t is not None and t.shape != query.shape:
            raise ValueError(f"{name} must have query's shape {tuple(query.shape)} (one log decay per key "
                             f"channel), got {tuple(t.shape)}")
    if reverse_gate is not None and direction != "bidirectional":
        raise ValueError(f"reverse_gate is only used with direction='bidirectional', got direction={direction!r}")
    check_same_dtype(**named)
    check_same_device(**named)
    K, V = query.shape[-1], value.shape[-1]
    if not (1 <= K <= MAX_HEAD_DIM and 1 <= V <= MAX_HEAD_DIM):
        raise ValueError(f"head dims must lie in [1, {MAX_HEAD_DIM}]: got key dim {K}, value dim {V}")
    if scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")


def gated_linear_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, gate: torch.Tensor,
                           scale: float | None = None, direction: str = "causal",
                           reverse_gate: torch.Tensor | None = None) -> torch.Tensor:
    """Gated linear attention with a per-key-channel forget gate (GLA; ViG's bidirectional BiGLA).

    Causal: ``S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T`` and ``o_t = (scale q_t)^T S_t``.
    Reverse: the same recurrence from the last token down (``flip(causal(flip(inputs)))``).
    Bidirectional: causal with ``gate`` plus reverse with ``reverse_gate`` (default ``gate``); each
    token's own term counts in both, so ViG's average of the two directions is
    ``scale = 0.5 * K ** -0.5``.

    Args:
        query, key: [B, T, H, K]; value: [B, T, H, V]. Any batch/token/head strides (slices of one
            projection are read in place).
        gate, reverse_gate: [B, T, H, K] log forget gates, ``<= 0`` (e.g. ``F.logsigmoid(x) / 16``).
            Positive values are a growing, not a forgetting, state and may overflow.
        scale: applied to the query; default ``K ** -0.5``.
        direction: "causal", "reverse" or "bidirectional".
    Returns:
        [B, T, H, V] in query's dtype.
    """
    _check(query, key, value, gate, reverse_gate, direction, scale)
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    if query.numel() == 0 or value.numel() == 0 or not use_kernels(query, key, value, gate, reverse_gate):
        return gated_linear_attention_reference(query, key, value, gate, scale, direction, reverse_gate)
    check_item_span(query=query, key=key, value=value, gate=gate, reverse_gate=reverse_gate)
    gf = gate if direction != "reverse" else None
    gb = None if direction == "causal" else (gate if reverse_gate is None else reverse_gate)
    q, k, v, gf, gb = map(_last_dim_unit, (query, key, value, gf, gb))
    return _gla_call(q, k, v, gf, gb, scale)[0]
