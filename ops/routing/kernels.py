"""Fused Triton region routing for bi-level routing attention: two launches per call.

:func:`region_topk` computes what ``reference.region_routing`` does (region means of q and k,
region-pair affinity, top-k key regions per query region) without the reshape/permute copies,
the separate means, the matmul, ``topk`` and the int64 -> int32 cast:

1. ``_region_mean_kernel``: one program per (group of regions, channel block) sums the
   regions' tokens of q AND k, read in place through their strides (often channel slices of one
   qkv projection), in fp32, into one ``[2, B, R, C]`` fp32 buffer. Small regions are packed
   several per program (BiFormer's 2x2-token regions would otherwise fill 4 of 16 rows of
   ~12k programs); a big region loops over its tokens.
2. ``_region_topk_kernel``: one program per (batch, query region) forms the affinity row
   against all R key-region means in fp32 (elementwise products and ``tl.sum``: no ``tl.dot``,
   so every dtype is exact under the interpreter too) and stores the k best ids as int32 by
   repeated arg-max, in descending affinity order (ties: lowest region id first). Ranking 8
   query regions per program against one read of the key means was 1.5-2x slower on the H200
   (fewer programs, each a serial chain of channel steps and arg-max rounds).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..common.args import check_span
from ..common.tuning import BoundLaunch, Launcher, alignment, cdiv, next_power_of_2

__all__ = ["region_topk", "topk_launches"]


@triton.jit
def _region_mean_kernel(
    Q, K, MEANS,
    C, K_OFF, inv_t, n_regions,
    sqb, sqy, sqx, sqc,
    skb, sky, skx, skc,
    R: tl.constexpr, NX: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, GROUP: tl.constexpr,
):
    """MEANS[0, b, r, c] = mean of q over region r's tokens, MEANS[1, b, r, c] likewise for k.
    Program (group of GROUP regions b * R + r, channel block); regions are row-major TH x TW
    blocks of the map. GROUP > 1: each region's tokens fill BLOCK_T // GROUP (>= TH * TW) rows.
    The region grid is constexpr: its per-row divisions become shifts or multiply-shifts."""
    if GROUP > 1:
        _region_mean_packed(Q, K, MEANS, R, NX, TH, TW, C, K_OFF, inv_t, n_regions,
                            sqb, sqy, sqx, sqc, skb, sky, skx, skc, BLOCK_T, BLOCK_C, GROUP)
    else:
        _region_mean_looped(Q, K, MEANS, R, NX, TH, TW, C, K_OFF, inv_t,
                            sqb, sqy, sqx, sqc, skb, sky, skx, skc, BLOCK_T, BLOCK_C)


@triton.jit
def _region_mean_looped(Q, K, MEANS, R: tl.constexpr, NX: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, C,
                        K_OFF, inv_t, sqb, sqy, sqx, sqc, skb, sky, skx, skc,
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """One region per program, its tokens BLOCK_T at a time."""
    pid = tl.program_id(0)
    b = (pid // R).to(tl.int64)  # batch offsets can pass 2**31 elements
    r = pid % R
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    y0 = (r // NX) * TH
    x0 = (r % NX) * TW
    T: tl.constexpr = TH * TW
    q_base = Q + b * sqb
    k_base = K + b * skb
    acc_q = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    acc_k = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        y = y0 + t // TW
        x = x0 + t % TW
        mask = (t < T)[:, None] & c_ok[None, :]
        acc_q += tl.load(q_base + (y * sqy + x * sqx)[:, None] + (c * sqc)[None, :], mask=mask,
                         other=0.0).to(tl.float32)
        acc_k += tl.load(k_base + (y * sky + x * skx)[:, None] + (c * skc)[None, :], mask=mask,
                         other=0.0).to(tl.float32)
    out = MEANS + pid * C + c
    tl.store(out, tl.sum(acc_q, axis=0) * inv_t, mask=c_ok)
    tl.store(out + K_OFF, tl.sum(acc_k, axis=0) * inv_t, mask=c_ok)


@triton.jit
def _region_mean_packed(Q, K, MEANS, R: tl.constexpr, NX: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, C,
                        K_OFF, inv_t, n_regions, sqb, sqy, sqx, sqc, skb, sky, skx, skc,
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, GROUP: tl.constexpr):
    """GROUP whole regions per program: row i is token i % ROWS of region pid * GROUP + i // ROWS
    (ROWS = BLOCK_T // GROUP, a power of two >= TH * TW), summed per region by a reshape."""
    ROWS: tl.constexpr = BLOCK_T // GROUP
    i = tl.arange(0, BLOCK_T)
    region = tl.program_id(0) * GROUP + i // ROWS   # global id b * R + r
    t = i % ROWS
    row_ok = (t < TH * TW) & (region < n_regions)
    b = (region // R).to(tl.int64)
    r = region % R
    y = (r // NX) * TH + t // TW
    x = (r % NX) * TW + t % TW
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mask = row_ok[:, None] & c_ok[None, :]
    q = tl.load(Q + (b * sqb + y * sqy + x * sqx)[:, None] + (c * sqc)[None, :], mask=mask, other=0.0)
    k = tl.load(K + (b * skb + y * sky + x * skx)[:, None] + (c * skc)[None, :], mask=mask, other=0.0)
    q_sum = tl.sum(tl.reshape(q.to(tl.float32), [GROUP, ROWS, BLOCK_C]), axis=1)
    k_sum = tl.sum(tl.reshape(k.to(tl.float32), [GROUP, ROWS, BLOCK_C]), axis=1)
    g = tl.program_id(0) * GROUP + tl.arange(0, GROUP)
    out = MEANS + g[:, None] * C + c[None, :]
    out_mask = (g < n_regions)[:, None] & c_ok[None, :]
    tl.store(out, q_sum * inv_t, mask=out_mask)
    tl.store(out + K_OFF, k_sum * inv_t, mask=out_mask)


@triton.jit
def _region_topk_kernel(
    MEANS, OUT,
    R, C, K_OFF, TOPK, scale,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """OUT[b, r, :TOPK] = ids of the TOPK largest (scale * q_mean[b, r]) . k_mean[b, j] over j,
    descending. Program b * R + r."""
    pid = tl.program_id(0)
    b = pid // R
    j = tl.arange(0, BLOCK_R)
    j_ok = j < R
    q_row = MEANS + pid * C
    k_rows = MEANS + K_OFF + b * R * C + j[:, None] * C
    aff = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < C
        qv = tl.load(q_row + c, mask=c_ok, other=0.0)
        kv = tl.load(k_rows + c[None, :], mask=j_ok[:, None] & c_ok[None, :], other=0.0)
        aff += tl.sum(kv * qv[None, :], axis=1)
    aff = aff * scale
    aff = tl.where(aff != aff, float("inf"), aff)  # NaN ranks first, as in torch.topk
    # Top-k by repeated arg-max on this one copy of the affinities (lowest id among equals).
    # Ranking by all-pairs comparisons (aff against its transpose) gave repeated ranks on the GPU:
    # the two layouts of aff need not hold bit-identical values. Taken regions drop to -inf, so
    # genuine -inf affinities move up to the lowest finite float to stay selectable.
    aff = tl.where(j_ok, tl.maximum(aff, -3.4028234663852886e38), float("-inf"))
    for slot in range(TOPK):
        pick = tl.argmax(aff, axis=0, tie_break_left=True)
        tl.store(OUT + pid * TOPK + slot, pick)
        aff = tl.where(j == pick, float("-inf"), aff)


_region_mean = Launcher(_region_mean_kernel)
_region_topk = Launcher(_region_topk_kernel)


def region_topk(q: torch.Tensor, k: torch.Tensor, regions: tuple[int, int], topk: int, scale: float,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Top-k key regions per query region (BiFormer routing), fused: two Triton launches.

    Same result as ``reference.region_routing`` (descending affinity), but int32.

    Args:
        q, k: [B, Y, X, C], any strides (e.g. channel slices of one [B, Y, X, 3C] qkv tensor),
            fp32/fp16/bf16; Y, X multiples of ``regions`` (the caller pads).
        regions: (ny, nx) region grid, R = ny * nx (row-major).
        topk: 1..R routed regions per query region.
        scale: multiplies the affinity (its sign matters, its size does not).
        out: optional preallocated contiguous int32 [B, R, topk].
    Returns:
        int32 [B, R, topk], contiguous.
    """
    B, Y, X, C = q.shape
    R = regions[0] * regions[1]
    means = torch.empty((2, B, R, C), device=q.device, dtype=torch.float32)
    if out is None:
        out = torch.empty((B, R, topk), device=q.device, dtype=torch.int32)
    mean, rank = topk_launches(q.get_device(), B, Y, X, C, tuple(regions), topk, scale, q.dtype, k.dtype, q.stride(),
                               k.stride(), alignment(q, k, means, out))
    mean(q, k, means)
    rank(means, out)
    return out


@functools.lru_cache(maxsize=128)
def topk_launches(device: int, B: int, Y: int, X: int, C: int, regions: tuple[int, int], topk: int, scale: float,
                  q_dtype: torch.dtype, k_dtype: torch.dtype, q_strides: tuple[int, ...], k_strides: tuple[int, ...],
                  align: tuple[int, ...]) -> tuple[BoundLaunch, BoundLaunch]:
    """``region_topk``'s two launches for one problem, bound once (the host cost of a call is
    part of BiFormer's step time): the means, called with (q, k, means: float32 [2, B, R, C]),
    and the ranking, called with (means, out: int32 [B, R, topk]); ``align`` is the
    :func:`alignment` of (q, k, means, out)."""
    check_span("q", (B, Y, X, C), q_strides)
    check_span("k", (B, Y, X, C), k_strides)
    ny, nx = regions
    R = ny * nx
    mean_grid, mean_args, mean_meta = _mean_plan(B, Y, X, C, ny, nx)
    site = (device, B, Y, X, C, regions, q_dtype, k_dtype, q_strides, k_strides, topk, align)
    mean = _region_mean.bind(site, mean_grid, (*mean_args, *q_strides, *k_strides), mean_meta)
    # One warp per program up to 64 regions: the top-k chain's arg-max rounds then reduce with
    # shuffles only (no shared memory round trip per round); 2048-element affinity tiles.
    # On the H200 (probe13) this took BiFormer's 14x14 top-16 from 49 to 29 us and 28x28 top-4
    # from 22 to 15 us, against 4 warps and 4096-element tiles.
    block_r = max(next_power_of_2(R), 16)
    topk_meta = dict(BLOCK_R=block_r, BLOCK_C=min(max(next_power_of_2(C), 16), max(2048 // block_r, 16)),
                     num_warps=max(1, min(4, block_r // 64)))
    rank = _region_topk.bind(site, (B * R,), (R, C, B * R * C, topk, scale), topk_meta)
    return mean, rank


def _mean_plan(B: int, Y: int, X: int, C: int, ny: int, nx: int, elems: int = 2048, block_c_max: int = 64,
               warps: int = 4):
    """(grid, scalar args, meta) of the region-mean launch: programs of ``elems`` elements per
    tensor over channel blocks of up to ``block_c_max`` (probe30 times other sizes)."""
    R = ny * nx
    T = (Y // ny) * (X // nx)
    block_c = min(max(next_power_of_2(C), 16), block_c_max)
    rows = elems // block_c
    t_rows = next_power_of_2(T)
    if t_rows * 2 <= rows:  # small regions: several per program, each in t_rows rows
        group = min(rows // t_rows, next_power_of_2(B * R))
        block_t = group * t_rows
    else:
        group, block_t = 1, min(max(t_rows, 16), rows)
    grid = (cdiv(B * R, group), cdiv(C, block_c))
    args = (C, B * R * C, 1.0 / T, B * R)
    return grid, args, dict(R=R, NX=nx, TH=Y // ny, TW=X // nx, BLOCK_T=block_t, BLOCK_C=block_c, GROUP=group,
                            num_warps=warps)
