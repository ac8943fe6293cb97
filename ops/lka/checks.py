"""Argument checks for large kernel attention and depthwise convs: errors name the argument and the rule."""
from __future__ import annotations

import torch

from ..common import check_floating, check_rank, check_same_device
from ..common.args import FLOAT_DTYPES

__all__ = ["check_depthwise", "check_input", "check_pointwise", "valid_chain"]


def check_input(x: torch.Tensor) -> None:
    check_floating(x, "x")
    check_rank(x, "x", (4,), "[B, C, H, W]")
    if any(n == 0 for n in x.shape[1:]):   # an empty batch is fine (the reference path runs it)
        raise ValueError(f"x must have at least one channel, row and column, got shape {tuple(x.shape)}")


def check_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation,
                    name: str) -> None:
    """weight [C, 1, kh, kw] with odd kh, kw; bias [C] or None; dilation an int >= 1."""
    c = x.shape[1]
    wname, bname = (f"{name}_weight", f"{name}_bias") if name else ("weight", "bias")
    check_floating(weight, wname)
    if weight.dim() != 4 or weight.shape[0] != c or weight.shape[1] != 1:
        raise ValueError(f"{wname} must be a depthwise kernel [C, 1, kh, kw] with C = {c} "
                         f"(x's channels), got shape {tuple(weight.shape)}")
    kh, kw = weight.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"{wname} must have odd kernel sizes (same padding), got {kh}x{kw}")
    if bias is not None:
        check_floating(bias, bname)
        if bias.shape != (c,):
            raise ValueError(f"{bname} must have shape [C] = [{c}], got {tuple(bias.shape)}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"{name or 'depthwise'} dilation must be an int >= 1, got {dilation!r}")
    check_same_device(x=x, **{wname: weight, bname: bias})


def check_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """conv1_weight [C, C, 1, 1] or [C, C]; conv1_bias [C]."""
    c = x.shape[1]
    check_floating(weight, "conv1_weight")
    check_floating(bias, "conv1_bias")
    if tuple(weight.shape) not in ((c, c, 1, 1), (c, c)):
        raise ValueError(f"conv1_weight must be a 1x1 conv [C, C, 1, 1] (or [C, C]) with C = {c}, "
                         f"got shape {tuple(weight.shape)}")
    if bias.shape != (c,):
        raise ValueError(f"conv1_bias must have shape [C] = [{c}], got {tuple(bias.shape)}")
    check_same_device(x=x, conv1_weight=weight, conv1_bias=bias)


def _valid_depthwise(w, b, d, c: int, device) -> bool:
    return (isinstance(w, torch.Tensor) and w.dtype in FLOAT_DTYPES and w.dim() == 4 and w.shape[0] == c
            and w.shape[1] == 1 and w.shape[2] % 2 == 1 and w.shape[3] % 2 == 1 and w.device == device
            and isinstance(b, torch.Tensor) and b.dtype in FLOAT_DTYPES and b.shape == (c,) and b.device == device
            and type(d) is int and d >= 1)


def valid_chain(x, dw_weights, dw_biases, dilations, conv1_weight, conv1_bias) -> bool:
    """True when a chain call passes every check above, tested in one pass: a model calls the op
    once per block, and the per-rule checks (with their messages) then run only for calls that
    may be wrong. A False result is not an error by itself."""
    if not (isinstance(x, torch.Tensor) and x.dtype in FLOAT_DTYPES and x.dim() == 4 and all(x.shape[1:])
            and isinstance(conv1_weight, torch.Tensor) and isinstance(conv1_bias, torch.Tensor)
            and len(dw_weights) == len(dw_biases) == len(dilations) > 0):
        return False
    c, device = x.shape[1], x.device
    return (all(_valid_depthwise(w, b, d, c, device) for w, b, d in zip(dw_weights, dw_biases, dilations))
            and conv1_weight.dtype in FLOAT_DTYPES and conv1_bias.dtype in FLOAT_DTYPES
            and conv1_weight.shape in ((c, c, 1, 1), (c, c)) and conv1_bias.shape == (c,)
            and conv1_weight.device == device and conv1_bias.device == device)
