"""Plain-PyTorch reference for large kernel attention and its separable family (fp64-capable).

Every depthwise convolution here uses "same" padding: an odd ``kh x kw`` kernel with
dilation ``d`` pads ``d * (k - 1) / 2`` on each side of each axis, so the map keeps its size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv2d_reference", "lka_chain_reference", "lka_chain_reference_with_intermediates",
           "large_kernel_attention_reference"]


def depthwise_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               dilation: int = 1) -> torch.Tensor:
    """x [B, C, H, W], weight [C, 1, kh, kw] (odd), bias [C] -> [B, C, H, W]."""
    kh, kw = weight.shape[-2:]
    return F.conv2d(x, weight, bias, padding=(dilation * (kh - 1) // 2, dilation * (kw - 1) // 2),
                    dilation=dilation, groups=x.shape[1])


def lka_chain_reference_with_intermediates(x: torch.Tensor, weights: Sequence[torch.Tensor],
                                           biases: Sequence[torch.Tensor], dilations: Sequence[int],
                                           conv1_weight: torch.Tensor, conv1_bias: torch.Tensor) -> list[torch.Tensor]:
    """[out, a_1, ..., a_n]: :func:`lka_chain_reference`'s output and each depthwise conv's output."""
    acts, a = [], x
    for w, b, d in zip(weights, biases, dilations):
        a = depthwise_conv2d_reference(a, w, b, d)
        acts.append(a)
    c = x.shape[1]
    return [x * F.conv2d(a, conv1_weight.reshape(c, c, 1, 1), conv1_bias), *acts]


def lka_chain_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                        dilations: Sequence[int], conv1_weight: torch.Tensor,
                        conv1_bias: torch.Tensor) -> torch.Tensor:
    """``x * conv1(dw_n(... dw_1(x)))``: a chain of same-padded depthwise convs, a 1x1 conv, a gate."""
    return lka_chain_reference_with_intermediates(x, weights, biases, dilations, conv1_weight, conv1_bias)[0]


def large_kernel_attention_reference(x, conv0_weight, conv0_bias, spatial_weight, spatial_bias,
                                     conv1_weight, conv1_bias) -> torch.Tensor:
    """VAN's LKA: dw5x5 (pad 2) -> dw7x7 dilation 3 (pad 9) -> 1x1 -> ``x * attn``."""
    return lka_chain_reference(x, [conv0_weight, spatial_weight], [conv0_bias, spatial_bias], [1, 3],
                               conv1_weight, conv1_bias)
