"""Bi-level routing attention (BiFormer's BRA) with a fused, gather-free Triton kernel.

``routing_attention(q, k, v, num_regions, topk, ...)`` on ``[B, H, W, C]`` maps: region-level
routing in plain PyTorch (region means, affinity, top-k), then token-level attention of each
region to the tokens of its routed regions through the index-driven block-sparse core in
``ops/common/block_sparse.py``, which reads keys/values by address (no gathered copies).
CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``) run the kernels, the routing
included (``kernels.region_topk``: region means and top-k in two launches); anything else runs
``reference.py`` (the official gather algorithm). Eager calls on the kernel path run a program
resolved once per problem (``eager.py``: bound launches, a lean ``autograd.Function``);
``torch.compile`` traces the registered ``foveal::bra_*`` ops instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import (as_tuple, check_floating, check_positive, check_rank, check_same_device, check_same_dtype,
                      eager_autograd, op_name, op_or_impl, use_kernels)
from ..common.args import FLOAT_DTYPES
from .reference import region_routing, routing_attention_reference, routing_attention_reference_backward

__all__ = ["region_routing", "routing_attention", "routing_attention_reference"]

_KERNELS = None


def _kernels():
    """(forward, backward, region_topk, eager_routing_attention) of the kernel path, imported on
    first use (they import Triton, which CPU-only installs may lack) and then kept: an import
    statement per call costs CPU time that eager calls on small maps are bound by."""
    global _KERNELS
    if _KERNELS is None:
        from ..common.block_sparse import block_sparse_attention_backward, block_sparse_attention_forward
        from .eager import eager_routing_attention
        from .kernels import region_topk
        _KERNELS = (block_sparse_attention_forward, block_sparse_attention_backward, region_topk,
                    eager_routing_attention)
    return _KERNELS


def _bra_forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor,
                 regions: list[int], num_heads: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    if use_kernels(q, k, v):
        tile = (q.shape[1] // regions[0], q.shape[2] // regions[1])
        return _kernels()[0](q, k, v, indices, tile, num_heads, scale)
    return routing_attention_reference(q, k, v, indices, tuple(regions), num_heads, scale, return_lse=True)


_bra_forward = torch.library.custom_op(op_name("bra_forward"), _bra_forward_impl, mutates_args=())


@_bra_forward.register_fake
def _(q, k, v, indices, regions, num_heads, scale):
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty_like(q), q.new_empty((*q.shape[:3], num_heads), dtype=lse_dtype)


def _bra_backward_impl(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                  lse: torch.Tensor, indices: torch.Tensor, regions: list[int], num_heads: int,
                  scale: float) -> list[torch.Tensor]:
    if use_kernels(q, k, v):
        tile = (q.shape[1] // regions[0], q.shape[2] // regions[1])
        return list(_kernels()[1](grad_out, q, k, v, out, lse, indices, tile, num_heads, scale))
    return list(routing_attention_reference_backward(grad_out, q, k, v, indices, tuple(regions), num_heads, scale))


_bra_backward = torch.library.custom_op(op_name("bra_backward"), _bra_backward_impl, mutates_args=())
_bra_backward_call = op_or_impl(_bra_backward, _bra_backward_impl)


@_bra_backward.register_fake
def _(grad_out, q, k, v, out, lse, indices, regions, num_heads, scale):
    return [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)]


def _setup_context(ctx, inputs, output):
    q, k, v, indices, regions, num_heads, scale = inputs
    ctx.save_for_backward(q, k, v, indices, *output)
    ctx.params = (regions, num_heads, scale)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, indices, out, lse = ctx.saved_tensors
    dq, dk, dv = _bra_backward_call(grad_out.contiguous(), q, k, v, out, lse, indices, *ctx.params)
    return dq, dk, dv, None, None, None, None


_bra_forward.register_autograd(_backward, setup_context=_setup_context)
_bra_call = eager_autograd(_bra_forward, _bra_forward_impl, _setup_context, _backward)


def _bra_route_impl(q: torch.Tensor, k: torch.Tensor, regions: list[int], topk: int, scale: float) -> torch.Tensor:
    return _kernels()[2](q, k, tuple(regions), topk, scale)   # two launches, int32, no copies


_bra_route = torch.library.custom_op(op_name("bra_route"), _bra_route_impl, mutates_args=())
_bra_route_call = op_or_impl(_bra_route, _bra_route_impl)


@_bra_route.register_fake
def _(q, k, regions, topk, scale):
    return q.new_empty((q.shape[0], regions[0] * regions[1], topk), dtype=torch.int32)


def _plain_call(q, k, v, regions, topk, num_heads, routing_indices) -> bool:
    """The common valid call, recognised in one expression: every rule of ``_check`` holds, so
    the per-rule checks (and their messages) are only run when something may be wrong."""
    return (routing_indices is None and type(topk) is int and type(num_heads) is int
            and isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)
            and isinstance(v, torch.Tensor) and q.dim() == 4 and k.shape == q.shape and v.shape == q.shape
            and q.dtype in FLOAT_DTYPES and k.dtype == q.dtype and v.dtype == q.dtype
            and k.device == q.device and v.device == q.device and num_heads >= 1 and q.shape[3] >= 1
            and q.shape[3] % num_heads == 0
            and 1 <= regions[0] <= q.shape[1] and 1 <= regions[1] <= q.shape[2]
            and 1 <= topk <= regions[0] * regions[1])


def _check(q, k, v, regions, topk, num_heads, routing_indices):
    for name, n in (("num_heads", num_heads), ("topk", topk)):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    check_positive((num_heads,), "num_heads")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_rank(t, name, (4,), "[B, H, W, C]")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    check_floating(q, "q")
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v)
    ny, nx = regions
    if ny < 1 or nx < 1:
        raise ValueError(f"num_regions must be positive, got {regions}")
    if ny > q.shape[1] or nx > q.shape[2]:
        raise ValueError(f"num_regions {regions} exceeds the map size {tuple(q.shape[1:3])}")
    C = q.shape[-1]
    if C < 1:
        raise ValueError(f"q, k and v need at least one channel, got shape {tuple(q.shape)}")
    if C % num_heads:
        raise ValueError(f"num_heads ({num_heads}) must divide the channel count C={C}")
    if routing_indices is None:
        if not 1 <= topk <= ny * nx:
            raise ValueError(f"topk must be in [1, num_regions^2 = {ny * nx}], got {topk}")
        return
    R = ny * nx
    if routing_indices.dim() != 3 or routing_indices.shape[:2] != (q.shape[0], R):
        raise ValueError(f"routing_indices must be [B, R={R}, topk], got {tuple(routing_indices.shape)}")
    if routing_indices.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"routing_indices must be int32 or int64, got {routing_indices.dtype}")
    if routing_indices.device != q.device:
        raise ValueError("routing_indices must be on q's device")
    if routing_indices.numel() and (routing_indices.min() < 0 or routing_indices.max() >= R):
        raise ValueError(f"routing_indices must lie in [0, {R})")


def routing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_regions: int | tuple[int, int],
    topk: int,
    scale: float | None = None,
    num_heads: int | None = None,
    routing_indices: torch.Tensor | None = None,
    return_indices: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Bi-level routing attention (BiFormer) on [B, H, W, C] maps.

    The map is split into ``num_regions`` x ``num_regions`` regions (BiFormer's ``n_win``).
    Each region's queries attend to the tokens of the ``topk`` regions whose mean key best
    matches the region's mean query (routing over all channels, no gradient), per head.

    Args:
        q, k, v: [B, H, W, C], C = num_heads * head_dim; any strides (channel slices of one
            qkv projection are read in place). H/W not divisible by ``num_regions`` are
            zero-padded right/bottom and the output cropped (BiFormer's ``auto_pad``).
        num_regions: regions per side, int or (rows, cols).
        topk: routed regions per query region, 1..num_regions^2.
        scale: softmax scale, default head_dim ** -0.5 (BiFormer uses C ** -0.5).
        num_heads: default C // 32 (BiFormer's 32-channel heads).
        routing_indices: optional [B, R, topk] region ids to use instead of the routing.
        return_indices: also return the int64 routing indices [B, R, topk], R = rows*cols.
    Returns:
        out [B, H, W, C] (and the routing indices).
    """
    regions = as_tuple(num_regions, 2, "num_regions")
    if num_heads is None:
        if q.shape[-1] % 32 or q.shape[-1] == 0:
            raise ValueError(f"num_heads defaults to C // 32, but C={q.shape[-1]} is not a positive multiple "
                             "of 32; pass num_heads")
        num_heads = q.shape[-1] // 32
    if not _plain_call(q, k, v, regions, topk, num_heads, routing_indices):
        _check(q, k, v, regions, topk, num_heads, routing_indices)
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else float(scale)
    H, W = q.shape[1:3]
    pad_b, pad_r = (-H) % regions[0], (-W) % regions[1]
    if pad_b or pad_r:
        q, k, v = (F.pad(t, (0, 0, 0, pad_r, 0, pad_b)) for t in (q, k, v))
    kernels = use_kernels(q, k, v)
    indices = routing_indices
    if indices is None and not (kernels and regions[0] * regions[1] <= 256):
        indices = region_routing(q, k, regions, topk, scale)
    eager = None
    if kernels and not torch.compiler.is_compiling():
        eager = _kernels()[3](q, k, v, regions, topk, num_heads, scale, indices, return_indices)
    if eager is not None:
        out, indices = eager
    else:
        if indices is None:
            indices = _bra_route_call(q, k, list(regions), topk, scale)
        out, _ = _bra_call(q, k, v, indices, list(regions), num_heads, scale)
    if pad_b or pad_r:
        out = out[:, :H, :W]
    return (out, indices.long()) if return_indices else out
