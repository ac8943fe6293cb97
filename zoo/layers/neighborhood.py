"""Neighborhood-attention layers (qkv projection -> ``ops.neighborhood_attention`` -> output
projection) on channels-last tokens ``[B, *spatial, C]``, NATTEN's module API."""
from __future__ import annotations

import torch
from torch import nn

from ops import neighborhood_attention

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]


class _NeighborhoodAttention(nn.Module):
    rank = 0

    def __init__(self, dim: int, num_heads: int, kernel_size: int | tuple[int, ...],
                 dilation: int | tuple[int, ...] = 1, stride: int | tuple[int, ...] = 1,
                 is_causal: bool | tuple[bool, ...] = False, qkv_bias: bool = True,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        for name, n in (("dim", dim), ("num_heads", num_heads)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name} must be a positive int, got {n!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.kernel_size, self.dilation, self.stride, self.is_causal = kernel_size, dilation, stride, is_causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, *spatial, C] with ``rank`` spatial axes -> [B, *spatial, C]."""
        if x.dim() != self.rank + 2 or x.shape[-1] != self.qkv.in_features:
            raise ValueError(f"{type(self).__name__} expects [batch, {self.rank} spatial axes, "
                             f"{self.qkv.in_features} channels], got shape {tuple(x.shape)}")
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.unbind(-3)   # strided views: the kernels read them in place
        out = neighborhood_attention(q, k, v, self.kernel_size, self.dilation, self.stride, self.is_causal)
        return self.proj_drop(self.proj(out.flatten(-2)))

    def extra_repr(self) -> str:
        return (f"num_heads={self.num_heads}, head_dim={self.head_dim}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, stride={self.stride}, is_causal={self.is_causal}")


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """1-D neighborhood attention on [B, L, C]."""
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """2-D neighborhood attention on [B, H, W, C]."""
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """3-D neighborhood attention on [B, T, H, W, C]."""
    rank = 3
