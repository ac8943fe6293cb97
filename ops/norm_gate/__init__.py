"""Fused norm-gate mix: ViG's locality-injected output gate in one kernel pass each way.

``norm_gate_mix(x, y, gate, x_weight, y_weight, eps=1e-6)`` returns
``rms_norm(x) * x_weight * s + rms_norm(y) * y_weight * (1 - s)``, ``s = sigmoid(gate)``, the RMS
over the last dim. In ViG's token mixer x is the GLA output, y the local (depthwise conv)
features and gate the ``g_proj`` logits, per value head. Unfused, the two fp32 RMSNorms, the
sigmoid and the blend take ~13 operator calls forward and ~20 backward (and save fp32 copies
of x and y); fused, one launch each way, and the backward recomputes the norms from the inputs.
CUDA tensors (or CPU under ``TRITON_INTERPRET=1``) run ``kernels.py``; float64 and other devices
run ``reference.py`` (the registered ops are the kernels' only).
"""
from __future__ import annotations

import torch

from ..common import (check_floating, check_same_device, check_same_dtype, eager_autograd, op_name, op_or_impl,
                      use_kernels)
from .reference import norm_gate_mix_reference

__all__ = ["norm_gate_mix", "norm_gate_mix_reference"]

MAX_DIM = 8192   # the kernels hold a row in registers; longer rows run the reference


def _forward_impl(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, x_weight: torch.Tensor,
                  y_weight: torch.Tensor, eps: float) -> torch.Tensor:
    from .kernels import norm_gate_forward
    return norm_gate_forward(x, y, gate, x_weight, y_weight, eps)


_forward = torch.library.custom_op(op_name("norm_gate_mix_forward"), _forward_impl, mutates_args=())


@_forward.register_fake
def _(x, y, gate, x_weight, y_weight, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _backward_impl(dout: torch.Tensor, x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, x_weight: torch.Tensor,
                   y_weight: torch.Tensor, eps: float) -> list[torch.Tensor]:
    from .kernels import norm_gate_backward
    return norm_gate_backward(dout, x, y, gate, x_weight, y_weight, eps)


_backward_op = torch.library.custom_op(op_name("norm_gate_mix_backward"), _backward_impl, mutates_args=())
_backward_call = op_or_impl(_backward_op, _backward_impl)


@_backward_op.register_fake
def _(dout, x, y, gate, x_weight, y_weight, eps):
    return [torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, y, gate, x_weight, y_weight)]


def _setup_context(ctx, inputs, output):
    x, y, gate, x_weight, y_weight, eps = inputs
    ctx.save_for_backward(x, y, gate, x_weight, y_weight)
    ctx.eps = eps


def _backward(ctx, dout):
    if dout is None:
        return None, None, None, None, None, None
    grads = _backward_call(dout.contiguous(), *ctx.saved_tensors, ctx.eps)
    return (*grads, None)


_forward.register_autograd(_backward, setup_context=_setup_context)
_call = eager_autograd(_forward, _forward_impl, _setup_context, _backward)


def _check(x, y, gate, x_weight, y_weight, eps) -> None:
    named = dict(x=x, y=y, gate=gate, x_weight=x_weight, y_weight=y_weight)
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        check_floating(t, name)
    if x.dim() < 1:
        raise ValueError("x must have at least one dim (the normalized channels last)")
    for name in ("y", "gate"):
        if named[name].shape != x.shape:
            raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(named[name].shape)}")
    for name in ("x_weight", "y_weight"):
        if named[name].shape != x.shape[-1:]:
            raise ValueError(f"{name} must be [{x.shape[-1]}] (one weight per channel of x's last dim), "
                             f"got {tuple(named[name].shape)}")
    check_same_dtype(x=x, y=y, gate=gate)
    check_same_device(**named)
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")


def norm_gate_mix(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, x_weight: torch.Tensor,
                  y_weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Two RMSNorms blended by a sigmoid gate, fused (ViG's output gate).

    Args:
        x, y, gate: [..., D], one shape and dtype; any strides with unit stride along D are read
            in place (others are copied).
        x_weight, y_weight: [D] RMSNorm weights (any float dtype: fp32 parameters under autocast).
        eps: added to the mean square, as in ``F.rms_norm``.
    Returns:
        ``rms_norm(x) * x_weight * s + rms_norm(y) * y_weight * (1 - s)``, ``s = sigmoid(gate)``:
        [..., D] in x's dtype, computed in fp32 and rounded once.
    """
    _check(x, y, gate, x_weight, y_weight, eps)
    # autograd runs through the reference's ops; rows longer than the kernels hold take it too
    if x.shape[-1] > MAX_DIM or not use_kernels(x, y, gate, x_weight, y_weight):
        return norm_gate_mix_reference(x, y, gate, x_weight, y_weight, float(eps))
    return _call(x, y, gate, x_weight, y_weight, float(eps))
