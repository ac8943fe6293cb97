"""Fused Triton kernels for neighborhood attention, forward and backward, 1-D/2-D/3-D.

Every rank runs the same kernels: the spatial rank is padded to 3 with leading size-1 axes
(kernel 1, dilation 1, stride 1), tensors stay heads-last ``[B, *spatial, H, D]`` and are
indexed through their strides (no permute copies).

Tiling. A program owns a query *box* (a spatial block of ``BM0 x BM1 x BM2`` tokens) inside
one dilation group per axis: group-local index ``j`` is memory index ``g + d * j``, so NA in
a group is plain NA on a shorter axis. The box's keys are the union of its queries' windows,
a box per axis because window bounds are monotone in the query index; the kernel walks that
union in key boxes starting exactly at its low corner, in one flat loop (so Triton pipelines
the loads across the whole walk), masks per element with the per-axis window bounds
(``_axis_bounds``, NATTEN's rules; one unsigned compare per non-causal axis, none on the size-1
padding axes) and keeps an online softmax in exp2. Query boxes inside one GNA stride group share
one window and skip the per-element test (``_mask_mode``; the forward and dQ walks), and so may
key boxes inside every window of their query box (``CORE``, forward and dQ, where such boxes make
up most of the walk: long 1-D windows). The attention matrix never exists in memory. Box shapes
come from the product-count cost model in ``tiling.py``.
Additional keys/values are dense key blocks in the same softmax; grouped-query attention maps
query head ``h`` to key head ``h // group``.

Loads (``TMA``): walks of ``TMA_MIN_WALK``+ tokens per program, on 16-bit, aligned layouts on
sm_90+, load each walked box through a device-side tensor descriptor over the batch item's dilation
group, ``[Lg0, Lg1, Lg2, heads, head dim]`` (``_box_descriptor``); the box is reshaped in shared
memory and feeds the dots directly. Shorter walks, and everything else, load by pointers.

Backward (FlashAttention-2 style): a dQ kernel per query box, which also computes ``delta =
rowsum(dO * O) - dLSE`` for its rows and stores it next to the log2-scaled LSE (one 8-byte pair per
query, ``ops.common.lse_delta``), and a dK/dV kernel per key box that visits the query boxes whose
windows can contain it (the inverse neighbourhood, contiguous per axis, found by binary searches on
the window bounds) for every query head of its GQA group, so no atomics are needed; its query
boxes whose every window holds the key box may skip the window test (``CORE``, as above).
Extra-KV gradients have their own small kernel over all queries. Launches go through
``Launcher`` (autotuned once per problem).
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ..common import check_item_span, dot_precision, interpret_mode, tune_configs
from ..common.lse_delta import load_lse_delta, store_lse_delta
from ..common.tuning import (Launcher, alignment, cdiv, heads_grid, next_power_of_2, scratch_allocator,
                             wide_offsets)
from .tiling import choose_boxes, core_fraction, walk_products

LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------------------------
# shared jit helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _axis_bounds(i, Lg, K: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr):
    """Inclusive group-local key range [lo, hi] of group-local query ``i`` on one axis.

    Queries form runs of ``S`` sharing their leader's window (centre, right-centre for even
    strides, the last query on causal axes), clamped to the group of length ``Lg``.
    """
    first = (i // S) * S
    if CAUSAL:
        leader = tl.minimum(first + (S - 1), Lg - 1)
        lo = tl.maximum(leader - (K - 1), 0)
        hi = i
    else:
        leader = tl.minimum(first + S // 2, Lg - 1)
        lo = tl.minimum(tl.maximum(leader - K // 2, 0), Lg - K)
        hi = lo + (K - 1)
    return lo, hi


@triton.jit
def _group_len(L, g, D: tl.constexpr):
    return (L - g + (D - 1)) // D


@triton.jit
def _split(pid, T, D: tl.constexpr):
    """Program index -> (rest, dilation group, tile index) on one axis (tile index fastest)."""
    u = pid % (D * T)
    return pid // (D * T), u // T, u % T


@triton.jit
def _program_axis(pid, T, L, D: tl.constexpr):
    """Program index -> (rest, dilation group, tile index, group length) on one axis."""
    rest, g, t = _split(pid, T, D)
    return rest, g, t, _group_len(L, g, D)


@triton.jit
def _batch_head(rest, H, WIDE: tl.constexpr, FLAT: tl.constexpr):
    """(batch, head) of a program. The grid is (boxes, batch * heads), or flat when batch * heads
    passes the second axis' 65535 (FLAT: ``rest``, the index left after the box axes, counts head
    then batch). WIDE (host: ``_checked_wide``, some tensor's offsets reach 2**31): the batch index is
    int64, so batch offsets are; otherwise it stays int32, as 64-bit offsets cost the
    register-bound dK/dV walk ~8% more instructions (probe40)."""
    bh = rest if FLAT else tl.program_id(1)
    b = bh // H
    if WIDE:
        b = b.to(tl.int64)
    return b, bh % H


@triton.jit
def _query_axis(t, r, Lg, BM: tl.constexpr, K: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr):
    """One axis of query box ``t``: its rows' group-local indices, their windows [lo, hi], and
    the union [u_lo, u_hi] of those windows (the bounds are monotone in the query)."""
    i = t * BM + r
    lo, hi = _axis_bounds(tl.minimum(i, Lg - 1), Lg, K, S, CAUSAL)
    u_lo, _ = _axis_bounds(tl.minimum(t * BM, Lg - 1), Lg, K, S, CAUSAL)
    _, u_hi = _axis_bounds(tl.minimum(t * BM + BM - 1, Lg - 1), Lg, K, S, CAUSAL)
    return i, lo, hi, u_lo, u_hi


@triton.jit
def _box_rows(B1: tl.constexpr, B2: tl.constexpr, BLOCK: tl.constexpr):
    """Row r of a flattened B0 x B1 x B2 box -> its (r0, r1, r2) offsets."""
    r = tl.arange(0, BLOCK)
    return r // (B1 * B2), (r // B2) % B1, r % B2


@triton.jit
def _positions(i0, i1, i2, g0, g1, g2, D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr):
    """Axis positions of group-local indices ``i*`` in dilation group ``g*`` (``g + D * i``)."""
    return g0 + D0 * i0, g1 + D1 * i1, g2 + D2 * i2


@triton.jit
def _walk_len(a0, b0, a1, b1, a2, b2, B0: tl.constexpr, B1: tl.constexpr, B2: tl.constexpr):
    """Blocks per axis (and in all) to cover the box [a, b] per axis with B0 x B1 x B2 blocks."""
    n0 = (b0 - a0 + B0) // B0
    n1 = (b1 - a1 + B1) // B1
    n2 = (b2 - a2 + B2) // B2
    return n0, n1, n2, n0 * n1 * n2


@triton.jit
def _walk_block(w0, w1, w2, a0, a1, a2, b0, b1, b2, r0, r1, r2,
                B0: tl.constexpr, B1: tl.constexpr, B2: tl.constexpr):
    """Block (w0, w1, w2) of the walk over the box [a, b]: its rows' group-local indices (``r*``
    from ``_box_rows``) and which rows lie inside the box. The walks are one flat loop, not
    nested per-axis loops: Triton software-pipelines only the innermost loop, and a per-axis
    innermost loop is often one or two blocks long."""
    j0 = a0 + w0 * B0 + r0
    j1 = a1 + w1 * B1 + r1
    j2 = a2 + w2 * B2 + r2
    return j0, j1, j2, (j0 <= b0) & (j1 <= b1) & (j2 <= b2)


@triton.jit
def _walk_start():
    """The first block's counters: int32 scalars that the loop carries (a runtime zero, so their
    type does not change in the loop)."""
    zero = tl.program_id(0) * 0
    return zero, zero, zero


@triton.jit
def _box_descriptor(base, s0, s1, s2, s_h, Lg0, Lg1, Lg2, n_heads, g0, g1, g2,
                    D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
                    B0: tl.constexpr, B1: tl.constexpr, B2: tl.constexpr, HEAD_DIM: tl.constexpr, TMA: tl.constexpr):
    """TMA: a tensor descriptor over one batch item's dilation group of a heads-last map,
    [Lg0, Lg1, Lg2, heads, HEAD_DIM] (axis strides times the dilation), whose loads are walk
    blocks of one head: boxes of B0 x B1 x B2 tokens, zero-filled past the group. The padding axes
    of 1-D/2-D problems (length 1, stride 0) get a nominal stride, as TMA wants nonzero multiples
    of 16 bytes. Otherwise the base pointer, unused."""
    if TMA:
        return tl.make_tensor_descriptor(
            base + g0 * s0 + g1 * s1 + g2 * s2, shape=[Lg0, Lg1, Lg2, n_heads, HEAD_DIM],
            strides=[s0 * D0 + (s0 == 0) * 16, s1 * D1 + (s1 == 0) * 16, s2 * D2 + (s2 == 0) * 16, s_h, 1],
            block_shape=[B0, B1, B2, 1, HEAD_DIM])
    else:
        return base


@triton.jit
def _box_load(desc, a0, a1, a2, h, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Walk block at group-local corner (a0, a1, a2) of head ``h`` through ``_box_descriptor``:
    [ROWS, HEAD_DIM], rows in box order (``_box_rows``); the reshape stays in shared memory, so
    the dots read the TMA-loaded tile directly."""
    return tl.reshape(desc.load([a0, a1, a2, h, 0]), [ROWS, HEAD_DIM])


@triton.jit
def _window_core(t, Lg, BM: tl.constexpr, K: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr):
    """The keys [x_lo, x_hi] inside the window of every query of box ``t`` on one axis (the last
    query's low bound to the first query's high bound: both are monotone); empty when x_lo > x_hi."""
    x_lo, _ = _axis_bounds(tl.minimum(t * BM + BM - 1, Lg - 1), Lg, K, S, CAUSAL)
    _, x_hi = _axis_bounds(tl.minimum(t * BM, Lg - 1), Lg, K, S, CAUSAL)
    return x_lo, x_hi


@triton.jit
def _block_edge(w, u_lo, x_lo, x_hi, BN: tl.constexpr):
    """Whether key block ``w`` of a walk from ``u_lo`` leaves the window core [x_lo, x_hi] on one
    axis (then some of its scores need the per-element window test)."""
    a = u_lo + w * BN
    return (a < x_lo) | (a + (BN - 1) > x_hi)


@triton.jit
def _walk_edge(w0, w1, w2, u_lo0, u_lo1, u_lo2, x_lo0, x_hi0, x_lo1, x_hi1, x_lo2, x_hi2,
               BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr, SKIP0: tl.constexpr, SKIP1: tl.constexpr):
    """Whether block (w0, w1, w2) of a walk from ``u_lo`` leaves the core [x_lo, x_hi] on some axis
    (``CORE``: only those blocks run the per-element window test). Forward/dQ: key blocks and the
    query box's window core; dK/dV: query blocks and the queries whose windows hold the key box."""
    edge = _block_edge(w2, u_lo2, x_lo2, x_hi2, BN2)
    if not SKIP1:
        edge = edge | _block_edge(w1, u_lo1, x_lo1, x_hi1, BN1)
    if not SKIP0:
        edge = edge | _block_edge(w0, u_lo0, x_lo0, x_hi0, BN0)
    return edge


@triton.jit
def _walk_next(w0, w1, w2, n0, n1, n2, ONE0: tl.constexpr, ONE1: tl.constexpr):
    """The walk's next block (last axis fastest) and whether the walk wrapped to its first.
    Counters carried across the loop, not the loop index divided by the block counts: those three
    runtime divisions were ~70 of a 3-D forward block's 604 SASS instructions and ~45 of a 2-D
    backbone block's 490 (offline sm_90 compiles, session 16). ``ONE0``/``ONE1``: the walk is one
    block long on that axis (the padding axes of 1-D/2-D problems, ``SKIP*``)."""
    w2 = w2 + 1
    wrap = w2 == n2
    w2 = tl.where(wrap, 0, w2)
    if not ONE1:
        w1 = tl.where(wrap, w1 + 1, w1)
        wrap = w1 == n1
        w1 = tl.where(wrap, 0, w1)
    if not ONE0:
        w0 = tl.where(wrap, w0 + 1, w0)
        wrap = w0 == n0
        w0 = tl.where(wrap, 0, w0)
    return w0, w1, w2, wrap


@triton.jit
def _axis_in(lo, hi, j, K: tl.constexpr, CAUSAL: tl.constexpr):
    """Bool: key ``j`` inside the window [lo, hi] on one axis. A non-causal window always holds
    exactly K keys, so one unsigned compare of ``j - lo`` does (negative wraps to huge)."""
    if CAUSAL:
        return (j >= lo) & (j <= hi)
    else:
        return (j - lo).to(tl.uint32, bitcast=True) < K


@triton.jit
def _win_mask(lo0, hi0, j0, lo1, hi1, j1, lo2, hi2, j2,
              K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
              C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
              SKIP0: tl.constexpr, SKIP1: tl.constexpr):
    """Bool mask: key (j0, j1, j2) inside the window [lo, hi] of a query, per axis; the caller
    broadcasts (queries x keys, or keys x queries for the transposed backward tiles). ``SKIP*``
    drop axes whose test is always true (the size-1 axes that pad 1-D/2-D problems to 3-D)."""
    mask = _axis_in(lo2, hi2, j2, K2, C2)
    if not SKIP1:
        mask = mask & _axis_in(lo1, hi1, j1, K1, C1)
    if not SKIP0:
        mask = mask & _axis_in(lo0, hi0, j0, K0, C0)
    return mask


@triton.jit
def _block_window_mask(w0, w1, w2, u_lo0, u_lo1, u_lo2, u_hi0, u_hi1, u_hi2, c0, c1, c2,
                       lo0, hi0, lo1, hi1, lo2, hi2, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
                       C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                       BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr,
                       SKIP0: tl.constexpr, SKIP1: tl.constexpr):
    """[queries, keys] window test of key block (w0, w1, w2) of a forward/dQ walk (its rows from
    ``_box_rows``: ``c*``), against the query rows' windows [lo, hi]."""
    j0, j1, j2, _ = _walk_block(w0, w1, w2, u_lo0, u_lo1, u_lo2, u_hi0, u_hi1, u_hi2, c0, c1, c2, BN0, BN1, BN2)
    return _win_mask(lo0[:, None], hi0[:, None], j0[None, :], lo1[:, None], hi1[:, None], j1[None, :],
                     lo2[:, None], hi2[:, None], j2[None, :], K0, K1, K2, C0, C1, C2, SKIP0, SKIP1)


@triton.jit
def _fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """One key block of the online softmax (log2 domain; m_i is in scaled units, so the scale
    rides in the exponent's FMA). kt: [D, N], v: [N, Dv]; ``mask`` is ignored unless MASKED."""
    s = tl.dot(q, kt, input_precision=PRECISION)
    if MASKED:
        s = tl.where(mask, s, float("-inf"))
    return _fwd_update(acc, m_i, l_i, s, v, qk_scale, PRECISION)


@triton.jit
def _fwd_update(acc, m_i, l_i, s, v, qk_scale, PRECISION: tl.constexpr):
    """The online softmax's update with the (masked) scores ``s`` of one key block."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)   # rows with no key yet stay at zero
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s * qk_scale - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, m_new, l_i


@triton.jit
def _dq_block(dq, q, do, lse2, delta, kt, vt, mask, qk_scale, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """dQ += dS K for one key block. kt: [D, N], vt: [Dv, N]; lse2 in log2 units; ``mask`` is
    ignored unless MASKED."""
    p = tl.exp2(tl.dot(q, kt, input_precision=PRECISION) * qk_scale - lse2[:, None])
    if MASKED:
        p = tl.where(mask, p, 0.0)
    return _dq_update(dq, p, do, delta, kt, vt, PRECISION)


@triton.jit
def _dq_update(dq, p, do, delta, kt, vt, PRECISION: tl.constexpr):
    """dQ += dS K with the (masked) probabilities ``p`` of one key block."""
    dp = tl.dot(do, vt, input_precision=PRECISION)
    ds = p * (dp - delta[:, None])
    return dq + tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)


@triton.jit
def _dkv_block(dk, dv, k, v, q, do, lse2, delta, mask_t, qk_scale, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """dK += dS^T Q, dV += P^T dO for one query block. k: [N, D], v: [N, Dv], q: [M, D],
    do: [M, Dv]; mask_t: [N, M], ignored unless MASKED."""
    pt = tl.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale - lse2[None, :])
    if MASKED:
        pt = tl.where(mask_t, pt, 0.0)
    return _dkv_update(dk, dv, pt, v, q, do, delta, PRECISION)


@triton.jit
def _dkv_update(dk, dv, pt, v, q, do, delta, PRECISION: tl.constexpr):
    """dK += dS^T Q, dV += P^T dO with the (masked) transposed probabilities ``pt`` [N, M]."""
    dv = dv + tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
    dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
    dst = pt * (dpt - delta[None, :])
    return dk + tl.dot(dst.to(q.dtype), q, input_precision=PRECISION), dv


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _walk_step(w0, w1, w2, k_base, v_base, sk_0, sk_1, sk_2, sv_0, sv_1, sv_2,
               lo0, hi0, lo1, hi1, lo2, hi2, u_lo0, u_hi0, u_lo1, u_hi1, u_lo2, u_hi2, c0, c1, c2,
               g0, g1, g2, offs_d, offs_dv, d_ok, dv_ok, kd, vd, hk,
               K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
               C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
               D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
               BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr, SKIP0: tl.constexpr, SKIP1: tl.constexpr,
               MASK_MODE: tl.constexpr, V_T: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Key block (w0, w1, w2) of a query box's walk over its window union [u_lo, u_hi] (forward and dQ):
    K^T [D, N], V as [N, Dv] (or V^T [Dv, N] when V_T) and the scores' mask. MASK_MODE (host's
    ``_mask_mode``): 2 tests each (query, key) pair against the query's window, 1 only the walk's
    bounds, 0 nothing (the caller then ignores the mask). TMA: K and V come through the descriptors
    ``kd``/``vd`` (head ``hk``); rows past the walk's bounds then hold real keys, not zeros, which
    the mask removes as it removes the rows inside the box but outside a query's window."""
    j0, j1, j2, kv_ok = _walk_block(w0, w1, w2, u_lo0, u_lo1, u_lo2, u_hi0, u_hi1, u_hi2, c0, c1, c2,
                                    BN0, BN1, BN2)
    if TMA:
        a0 = u_lo0 + w0 * BN0
        a1 = u_lo1 + w1 * BN1
        a2 = u_lo2 + w2 * BN2
        kt = tl.trans(_box_load(kd, a0, a1, a2, hk, BN0 * BN1 * BN2, BLOCK_D))
        v = _box_load(vd, a0, a1, a2, hk, BN0 * BN1 * BN2, BLOCK_DV)
        if V_T:
            v = tl.trans(v)
    else:
        x0, x1, x2 = _positions(j0, j1, j2, g0, g1, g2, D0, D1, D2)
        k_tok = x0 * sk_0 + x1 * sk_1 + x2 * sk_2
        v_tok = x0 * sv_0 + x1 * sv_1 + x2 * sv_2
        kt = tl.load(k_base + k_tok[None, :] + offs_d[:, None], mask=kv_ok[None, :] & d_ok[:, None], other=0.0)
        if V_T:
            v = tl.load(v_base + v_tok[None, :] + offs_dv[:, None], mask=kv_ok[None, :] & dv_ok[:, None], other=0.0)
        else:
            v = tl.load(v_base + v_tok[:, None] + offs_dv[None, :], mask=kv_ok[:, None] & dv_ok[None, :], other=0.0)
    if UPCAST:
        kt = kt.to(tl.float32)
        v = v.to(tl.float32)
    if MASK_MODE == 2:
        mask = _win_mask(lo0[:, None], hi0[:, None], j0[None, :], lo1[:, None], hi1[:, None], j1[None, :],
                         lo2[:, None], hi2[:, None], j2[None, :], K0, K1, K2, C0, C1, C2, SKIP0, SKIP1)
    else:
        mask = kv_ok[None, :]
    return kt, v, mask


def _configs(kind: str):
    if interpret_mode():  # one config: autotuning under the interpreter only costs time
        return [triton.Config({}, num_warps=4, num_stages=1)]
    stages = [(4, 2), (4, 3), (8, 2), (8, 3)] if kind == "fwd" else [(4, 1), (4, 2), (8, 1), (8, 2)]
    return tune_configs([triton.Config({}, num_warps=w, num_stages=s) for w, s in stages])


def _warps_for_tile(configs, named_args, **kwargs):
    """Autotune stages only: 4 warps (one warpgroup) for 64-row query tiles, 8 for 128."""
    rows = kwargs["BM0"] * kwargs["BM1"] * kwargs["BM2"]
    keep = [c for c in configs if c.num_warps == (8 if rows >= 128 else 4)]
    return keep or configs[:1]


def _fwd_warps(configs, named_args, **kwargs):
    """The forward's rule: as ``_warps_for_tile``, and one warp for 32-row query boxes (``_plan``
    takes them for small windows at head dim 32): on the NA-2D backbone they ran in 150 us at
    one warp against 177 (2 warps) and 321 (4 warps), probe33. Those one-warp programs are bound
    by latency at 143 registers, 3 warps per scheduler (Nsight Compute, probe42), so they are also
    offered a 128-register cap (4 warps per scheduler, 2 spilled registers): 142 against 150 us
    on the backbone, probe43; larger programs lost with any cap."""
    if kwargs["BM0"] * kwargs["BM1"] * kwargs["BM2"] <= 32:
        caps = (None,) if interpret_mode() else (None, 128)
        return [triton.Config({}, num_warps=1, num_stages=c.num_stages, maxnreg=r)
                for c in configs if c.num_warps == 4 for r in caps]
    return _warps_for_tile(configs, named_args, **kwargs)


_PRUNE = {"early_config_prune": _warps_for_tile}
_TUNE_KEY = ["L0", "L1", "L2", "N_EXTRA", "K0", "K1", "K2", "D0", "D1", "D2", "S0", "S1", "S2",
             "C0", "C1", "C2", "HEAD_DIM", "HEAD_DIM_V", "BM0", "BM1", "BM2", "BN0", "BN1", "BN2",
             "DTYPE_KEY"]


@triton.autotune(configs=_configs("fwd"), key=_TUNE_KEY, prune_configs_by={"early_config_prune": _fwd_warps})
@triton.jit
def _na_fwd_kernel(
    Q, K, V, EK, EV, O, LSE,
    sq_b, sq_0, sq_1, sq_2, sq_h,
    sk_b, sk_0, sk_1, sk_2, sk_h,
    sv_b, sv_0, sv_1, sv_2, sv_h,
    sek_b, sek_n, sek_h, sev_b, sev_n, sev_h,
    so_b, so_0, so_1, so_2, so_h,
    sl_b, sl_0, sl_1, sl_2, sl_h,
    H, KV_GROUP, L0, L1, L2, N_EXTRA, T0, T1, T2, qk_scale,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
    D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
    S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BM0: tl.constexpr, BM1: tl.constexpr, BM2: tl.constexpr,
    BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr,
    DTYPE_KEY: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, MASK_MODE: tl.constexpr,
    CORE: tl.constexpr, WIDE: tl.constexpr, FLAT: tl.constexpr, TMA: tl.constexpr,
):
    """Forward per query box. MASK_MODE (host's ``_mask_mode``): 2 tests each (query, key) pair
    against the query's window, 1 only the walk's bounds, 0 nothing. CORE (with MASK_MODE 2; host's
    ``_core_skip``): key blocks inside every window of the query box skip that test."""
    BLOCK_M: tl.constexpr = BM0 * BM1 * BM2
    BLOCK_N: tl.constexpr = BN0 * BN1 * BN2
    SKIP0: tl.constexpr = K0 == 1 and BM0 == 1 and BN0 == 1   # a padding axis: always inside
    SKIP1: tl.constexpr = K1 == 1 and BM1 == 1 and BN1 == 1
    pid = tl.program_id(0)
    pid, g2, t2, Lg2 = _program_axis(pid, T2, L2, D2)
    pid, g1, t1, Lg1 = _program_axis(pid, T1, L1, D1)
    pid, g0, t0, Lg0 = _program_axis(pid, T0, L0, D0)
    b, h = _batch_head(pid, H, WIDE, FLAT)
    hk = h // KV_GROUP

    # query box (group-local indices), its rows' windows and the union of those windows
    r0, r1, r2 = _box_rows(BM1, BM2, BLOCK_M)
    i0, lo0, hi0, u_lo0, u_hi0 = _query_axis(t0, r0, Lg0, BM0, K0, S0, C0)
    i1, lo1, hi1, u_lo1, u_hi1 = _query_axis(t1, r1, Lg1, BM1, K1, S1, C1)
    i2, lo2, hi2, u_lo2, u_hi2 = _query_axis(t2, r2, Lg2, BM2, K2, S2, C2)
    q_valid = (i0 < Lg0) & (i1 < Lg1) & (i2 < Lg2)

    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    p0, p1, p2 = _positions(i0, i1, i2, g0, g1, g2, D0, D1, D2)
    q_tok = p0 * sq_0 + p1 * sq_1 + p2 * sq_2
    q = tl.load(Q + b * sq_b + h * sq_h + q_tok[:, None] + offs_d[None, :],
                mask=q_valid[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:  # the interpreter's tl.dot is wrong on bf16 operands
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    c0, c1, c2 = _box_rows(BN1, BN2, BLOCK_N)
    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    kd = _box_descriptor(K + b * sk_b, sk_0, sk_1, sk_2, sk_h, Lg0, Lg1, Lg2, H // KV_GROUP, g0, g1, g2,
                         D0, D1, D2, BN0, BN1, BN2, BLOCK_D, TMA)
    vd = _box_descriptor(V + b * sv_b, sv_0, sv_1, sv_2, sv_h, Lg0, Lg1, Lg2, H // KV_GROUP, g0, g1, g2,
                         D0, D1, D2, BN0, BN1, BN2, BLOCK_DV, TMA)
    # CORE: key blocks inside every query's window (the box's core: the last query's low bound to
    # the first query's high bound, per axis) skip the per-element window test; the test runs in a
    # branch, which cost 1-11% where few blocks skip it (probe45), so the host turns CORE on only
    # for walks mostly made of core blocks (``_core_skip``)
    if CORE:
        x_lo0, x_hi0 = _window_core(t0, Lg0, BM0, K0, S0, C0)
        x_lo1, x_hi1 = _window_core(t1, Lg1, BM1, K1, S1, C1)
        x_lo2, x_hi2 = _window_core(t2, Lg2, BM2, K2, S2, C2)
    STEP_MASK: tl.constexpr = 1 if CORE else MASK_MODE
    nb0, nb1, nb2, n_blocks = _walk_len(u_lo0, u_hi0, u_lo1, u_hi1, u_lo2, u_hi2, BN0, BN1, BN2)
    w0, w1, w2 = _walk_start()
    for it in range(0, n_blocks):
        kt, v, mask = _walk_step(w0, w1, w2, k_base, v_base, sk_0, sk_1, sk_2, sv_0, sv_1, sv_2,
                                 lo0, hi0, lo1, hi1, lo2, hi2, u_lo0, u_hi0, u_lo1, u_hi1, u_lo2, u_hi2,
                                 c0, c1, c2, g0, g1, g2, offs_d, offs_dv, d_ok, dv_ok, kd, vd, hk,
                                 K0, K1, K2, C0, C1, C2, D0, D1, D2, BN0, BN1, BN2, SKIP0, SKIP1,
                                 STEP_MASK, False, UPCAST, TMA, BLOCK_D, BLOCK_DV)
        if CORE:
            s = tl.dot(q, kt, input_precision=PRECISION)
            if _walk_edge(w0, w1, w2, u_lo0, u_lo1, u_lo2, x_lo0, x_hi0, x_lo1, x_hi1, x_lo2, x_hi2,
                          BN0, BN1, BN2, SKIP0, SKIP1):
                win = _block_window_mask(w0, w1, w2, u_lo0, u_lo1, u_lo2, u_hi0, u_hi1, u_hi2, c0, c1, c2,
                                         lo0, hi0, lo1, hi1, lo2, hi2, K0, K1, K2, C0, C1, C2,
                                         BN0, BN1, BN2, SKIP0, SKIP1)
                s = tl.where(win, s, float("-inf"))
            acc, m_i, l_i = _fwd_update(acc, m_i, l_i, s, v, qk_scale, PRECISION)
        else:
            acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, MASK_MODE > 0, PRECISION)
        w0, w1, w2, _ = _walk_next(w0, w1, w2, nb0, nb1, nb2, SKIP0, SKIP1)

    offs_e = tl.arange(0, BLOCK_N)
    for e in range(0, N_EXTRA, BLOCK_N):   # additional keys: dense, same softmax
        ej = e + offs_e
        e_ok = ej < N_EXTRA
        kt = tl.load(EK + b * sek_b + hk * sek_h + ej[None, :] * sek_n + offs_d[:, None],
                     mask=e_ok[None, :] & d_ok[:, None], other=0.0)
        v = tl.load(EV + b * sev_b + hk * sev_h + ej[:, None] * sev_n + offs_dv[None, :],
                    mask=e_ok[:, None] & dv_ok[None, :], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        mask = (i0[:, None] >= 0) & e_ok[None, :]   # every query sees every extra key
        acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, True, PRECISION)

    acc = acc / l_i[:, None]
    o_tok = p0 * so_0 + p1 * so_1 + p2 * so_2
    tl.store(O + b * so_b + h * so_h + o_tok[:, None] + offs_dv[None, :], acc.to(O.dtype.element_ty),
             mask=q_valid[:, None] & dv_ok[None, :])
    l_tok = p0 * sl_0 + p1 * sl_1 + p2 * sl_2
    tl.store(LSE + b * sl_b + h * sl_h + l_tok, (m_i + tl.log2(l_i)) / 1.4426950408889634, mask=q_valid)


# ----------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------
@triton.autotune(configs=_configs("bwd"), key=_TUNE_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _na_bwd_dq_kernel(
    Q, K, V, EK, EV, O, DO, LSE, DLSE, LD, DQ,
    sq_b, sq_0, sq_1, sq_2, sq_h,
    sk_b, sk_0, sk_1, sk_2, sk_h,
    sv_b, sv_0, sv_1, sv_2, sv_h,
    sek_b, sek_n, sek_h, sev_b, sev_n, sev_h,
    so_b, so_0, so_1, so_2, so_h,
    sdo_b, sdo_0, sdo_1, sdo_2, sdo_h,
    sl_b, sl_0, sl_1, sl_2, sl_h,
    sdq_b, sdq_0, sdq_1, sdq_2, sdq_h,
    H, KV_GROUP, L0, L1, L2, N_EXTRA, T0, T1, T2, qk_scale, scale,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
    D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
    S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BM0: tl.constexpr, BM1: tl.constexpr, BM2: tl.constexpr,
    BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr,
    DTYPE_KEY: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, HAS_DLSE: tl.constexpr,
    MASK_MODE: tl.constexpr, CORE: tl.constexpr, WIDE: tl.constexpr, FLAT: tl.constexpr, TMA: tl.constexpr,
):
    """dQ per query box. Also computes ``delta = rowsum(dO * O) - dLSE`` for its rows and writes it
    with the log2-scaled LSE to LD ([B, *spatial, H, 2] fp32) for the dK/dV kernels, so no separate
    pass reads O and dO. LSE and DLSE share one stride set ([B, *spatial, H] fp32, contiguous, as
    LD is with its pair axis). MASK_MODE and CORE as in the forward."""
    BLOCK_M: tl.constexpr = BM0 * BM1 * BM2
    BLOCK_N: tl.constexpr = BN0 * BN1 * BN2
    SKIP0: tl.constexpr = K0 == 1 and BM0 == 1 and BN0 == 1   # a padding axis: always inside
    SKIP1: tl.constexpr = K1 == 1 and BM1 == 1 and BN1 == 1
    pid = tl.program_id(0)
    pid, g2, t2, Lg2 = _program_axis(pid, T2, L2, D2)
    pid, g1, t1, Lg1 = _program_axis(pid, T1, L1, D1)
    pid, g0, t0, Lg0 = _program_axis(pid, T0, L0, D0)
    b, h = _batch_head(pid, H, WIDE, FLAT)
    hk = h // KV_GROUP

    r0, r1, r2 = _box_rows(BM1, BM2, BLOCK_M)
    i0, lo0, hi0, u_lo0, u_hi0 = _query_axis(t0, r0, Lg0, BM0, K0, S0, C0)
    i1, lo1, hi1, u_lo1, u_hi1 = _query_axis(t1, r1, Lg1, BM1, K1, S1, C1)
    i2, lo2, hi2, u_lo2, u_hi2 = _query_axis(t2, r2, Lg2, BM2, K2, S2, C2)
    q_valid = (i0 < Lg0) & (i1 < Lg1) & (i2 < Lg2)

    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    p0, p1, p2 = _positions(i0, i1, i2, g0, g1, g2, D0, D1, D2)
    q = tl.load(Q + b * sq_b + h * sq_h + (p0 * sq_0 + p1 * sq_1 + p2 * sq_2)[:, None] + offs_d[None, :],
                mask=q_valid[:, None] & d_ok[None, :], other=0.0)
    do = tl.load(DO + b * sdo_b + h * sdo_h + (p0 * sdo_0 + p1 * sdo_1 + p2 * sdo_2)[:, None]
                 + offs_dv[None, :], mask=q_valid[:, None] & dv_ok[None, :], other=0.0)
    o = tl.load(O + b * so_b + h * so_h + (p0 * so_0 + p1 * so_1 + p2 * so_2)[:, None] + offs_dv[None, :],
                mask=q_valid[:, None] & dv_ok[None, :], other=0.0)
    l_bh = b * sl_b + h * sl_h   # added to the base first: the per-row offsets stay int32 when WIDE
    l_tok = p0 * sl_0 + p1 * sl_1 + p2 * sl_2
    lse2 = tl.load(LSE + l_bh + l_tok, mask=q_valid, other=0.0) * 1.4426950408889634
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)
    if HAS_DLSE:  # the dLSE term enters dS = P (dP - delta) the same way
        delta -= tl.load(DLSE + l_bh + l_tok, mask=q_valid, other=0.0)
    store_lse_delta(LD + 2 * l_bh, l_tok, lse2, delta, q_valid)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    c0, c1, c2 = _box_rows(BN1, BN2, BLOCK_N)
    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    kd = _box_descriptor(K + b * sk_b, sk_0, sk_1, sk_2, sk_h, Lg0, Lg1, Lg2, H // KV_GROUP, g0, g1, g2,
                         D0, D1, D2, BN0, BN1, BN2, BLOCK_D, TMA)
    vd = _box_descriptor(V + b * sv_b, sv_0, sv_1, sv_2, sv_h, Lg0, Lg1, Lg2, H // KV_GROUP, g0, g1, g2,
                         D0, D1, D2, BN0, BN1, BN2, BLOCK_DV, TMA)
    if CORE:
        x_lo0, x_hi0 = _window_core(t0, Lg0, BM0, K0, S0, C0)
        x_lo1, x_hi1 = _window_core(t1, Lg1, BM1, K1, S1, C1)
        x_lo2, x_hi2 = _window_core(t2, Lg2, BM2, K2, S2, C2)
    STEP_MASK: tl.constexpr = 1 if CORE else MASK_MODE
    nb0, nb1, nb2, n_blocks = _walk_len(u_lo0, u_hi0, u_lo1, u_hi1, u_lo2, u_hi2, BN0, BN1, BN2)
    w0, w1, w2 = _walk_start()
    for it in range(0, n_blocks):
        # rows past the grid need no mask: they load q = dO = 0 and lse = delta = 0, so their dS is 0
        kt, vt, mask = _walk_step(w0, w1, w2, k_base, v_base, sk_0, sk_1, sk_2, sv_0, sv_1, sv_2,
                                  lo0, hi0, lo1, hi1, lo2, hi2, u_lo0, u_hi0, u_lo1, u_hi1, u_lo2, u_hi2,
                                  c0, c1, c2, g0, g1, g2, offs_d, offs_dv, d_ok, dv_ok, kd, vd, hk,
                                  K0, K1, K2, C0, C1, C2, D0, D1, D2, BN0, BN1, BN2, SKIP0, SKIP1,
                                  STEP_MASK, True, UPCAST, TMA, BLOCK_D, BLOCK_DV)
        if CORE:
            p = tl.exp2(tl.dot(q, kt, input_precision=PRECISION) * qk_scale - lse2[:, None])
            if _walk_edge(w0, w1, w2, u_lo0, u_lo1, u_lo2, x_lo0, x_hi0, x_lo1, x_hi1, x_lo2, x_hi2,
                          BN0, BN1, BN2, SKIP0, SKIP1):
                win = _block_window_mask(w0, w1, w2, u_lo0, u_lo1, u_lo2, u_hi0, u_hi1, u_hi2, c0, c1, c2,
                                         lo0, hi0, lo1, hi1, lo2, hi2, K0, K1, K2, C0, C1, C2,
                                         BN0, BN1, BN2, SKIP0, SKIP1)
                p = tl.where(win, p, 0.0)
            dq = _dq_update(dq, p, do, delta, kt, vt, PRECISION)
        else:
            dq = _dq_block(dq, q, do, lse2, delta, kt, vt, mask, qk_scale, MASK_MODE > 0, PRECISION)
        w0, w1, w2, _ = _walk_next(w0, w1, w2, nb0, nb1, nb2, SKIP0, SKIP1)

    offs_e = tl.arange(0, BLOCK_N)
    for e in range(0, N_EXTRA, BLOCK_N):
        ej = e + offs_e
        e_ok = ej < N_EXTRA
        kt = tl.load(EK + b * sek_b + hk * sek_h + ej[None, :] * sek_n + offs_d[:, None],
                     mask=e_ok[None, :] & d_ok[:, None], other=0.0)
        vt = tl.load(EV + b * sev_b + hk * sev_h + ej[None, :] * sev_n + offs_dv[:, None],
                     mask=e_ok[None, :] & dv_ok[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        mask = q_valid[:, None] & e_ok[None, :]
        dq = _dq_block(dq, q, do, lse2, delta, kt, vt, mask, qk_scale, True, PRECISION)

    dq_tok = p0 * sdq_0 + p1 * sdq_1 + p2 * sdq_2
    tl.store(DQ + b * sdq_b + h * sdq_h + dq_tok[:, None] + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_valid[:, None] & d_ok[None, :])


@triton.jit
def _dkv_window_mask(i0, i1, i2, j0, j1, j2, q_ok, Lg0, Lg1, Lg2,
                     K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
                     S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
                     C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                     SKIP0: tl.constexpr, SKIP1: tl.constexpr):
    """[keys, queries] test of the key rows ``j*`` against the windows of the query rows ``i*``
    (and the query rows inside the walk, ``q_ok``) in the dK/dV walk."""
    lo0, hi0 = _axis_bounds(tl.minimum(i0, Lg0 - 1), Lg0, K0, S0, C0)
    lo1, hi1 = _axis_bounds(tl.minimum(i1, Lg1 - 1), Lg1, K1, S1, C1)
    lo2, hi2 = _axis_bounds(tl.minimum(i2, Lg2 - 1), Lg2, K2, S2, C2)
    return _win_mask(lo0[None, :], hi0[None, :], j0[:, None], lo1[None, :], hi1[None, :], j1[:, None],
                     lo2[None, :], hi2[None, :], j2[:, None], K0, K1, K2, C0, C1, C2, SKIP0, SKIP1) & q_ok[None, :]


@triton.jit
def _query_range(jf, jl, Lg, K: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr):
    """Contiguous group-local query range whose windows meet keys [jf, jl] on one axis.

    Binary searches on the window bounds, which are monotone in the query: the first query is
    the first whose window ends at or after ``jf`` and the last the last whose window starts at
    or before ``jl``. A window holds its query and lies within K + S of it, so the first is in
    [jf - (K + S), jf] and the last in [jl, jl + K + S]: log2(K + S) steps (a linear scan took
    ~K/2 + S steps, ~2000 for a 2049-key window, per program). Needs jf, jl <= Lg - 1; swapped
    (jf > jl), the range is the queries whose windows hold all of [jl, jf] (empty: first > last).
    """
    a = tl.maximum(jf - (K + S), 0)
    b = jf
    while a < b:
        m = (a + b) // 2
        _, hi = _axis_bounds(m, Lg, K, S, CAUSAL)
        a = tl.where(hi < jf, m + 1, a)
        b = tl.where(hi < jf, b, m)
    first = a
    a = jl
    b = tl.minimum(jl + (K + S), Lg - 1)
    while a < b:
        m = (a + b + 1) // 2
        lo, _ = _axis_bounds(m, Lg, K, S, CAUSAL)
        a = tl.where(lo > jl, a, m)
        b = tl.where(lo > jl, m - 1, b)
    return first, a


@triton.autotune(configs=_configs("bwd"), key=_TUNE_KEY, prune_configs_by=_PRUNE)
@triton.jit
def _na_bwd_dkv_kernel(
    Q, K, V, DO, LD, DK, DV,
    sq_b, sq_0, sq_1, sq_2, sq_h,
    sk_b, sk_0, sk_1, sk_2, sk_h,
    sv_b, sv_0, sv_1, sv_2, sv_h,
    sdo_b, sdo_0, sdo_1, sdo_2, sdo_h,
    sl_b, sl_0, sl_1, sl_2, sl_h,
    sdk_b, sdk_0, sdk_1, sdk_2, sdk_h,
    sdv_b, sdv_0, sdv_1, sdv_2, sdv_h,
    HKV, KV_GROUP, L0, L1, L2, N_EXTRA, T0, T1, T2, qk_scale, scale,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
    D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
    S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BM0: tl.constexpr, BM1: tl.constexpr, BM2: tl.constexpr,
    BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr,
    DTYPE_KEY: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, MASK_MODE: tl.constexpr,
    CORE: tl.constexpr, WIDE: tl.constexpr, FLAT: tl.constexpr, TMA: tl.constexpr,
):
    """dK, dV per key box (BN0 x BN1 x BN2; T* count key tiles) over the query boxes (BM*)
    of its inverse neighbourhood, for every query head of its GQA group. MASK_MODE (host's
    ``_dkv_mask_mode``): 1 when every walked query box lies inside one stride group (one window
    per box: the mask is a test of the key rows against it), 2 tests each (key, query) pair.
    CORE (with MASK_MODE 2; host's ``_core_skip``): query boxes whose every window holds the whole
    key box skip that test."""
    BLOCK_M: tl.constexpr = BM0 * BM1 * BM2
    BLOCK_N: tl.constexpr = BN0 * BN1 * BN2
    SKIP0: tl.constexpr = K0 == 1 and BM0 == 1 and BN0 == 1   # a padding axis: always inside
    SKIP1: tl.constexpr = K1 == 1 and BM1 == 1 and BN1 == 1
    pid = tl.program_id(0)
    pid, g2, t2, Lg2 = _program_axis(pid, T2, L2, D2)
    pid, g1, t1, Lg1 = _program_axis(pid, T1, L1, D1)
    pid, g0, t0, Lg0 = _program_axis(pid, T0, L0, D0)
    b, hk = _batch_head(pid, HKV, WIDE, FLAT)

    c0, c1, c2 = _box_rows(BN1, BN2, BLOCK_N)
    j0 = t0 * BN0 + c0
    j1 = t1 * BN1 + c1
    j2 = t2 * BN2 + c2
    kv_ok = (j0 < Lg0) & (j1 < Lg1) & (j2 < Lg2)
    qa0, qb0 = _query_range(tl.minimum(t0 * BN0, Lg0 - 1), tl.minimum(t0 * BN0 + BN0 - 1, Lg0 - 1), Lg0, K0, S0, C0)
    qa1, qb1 = _query_range(tl.minimum(t1 * BN1, Lg1 - 1), tl.minimum(t1 * BN1 + BN1 - 1, Lg1 - 1), Lg1, K1, S1, C1)
    qa2, qb2 = _query_range(tl.minimum(t2 * BN2, Lg2 - 1), tl.minimum(t2 * BN2 + BN2 - 1, Lg2 - 1), Lg2, K2, S2, C2)

    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    p0, p1, p2 = _positions(j0, j1, j2, g0, g1, g2, D0, D1, D2)
    k = tl.load(K + b * sk_b + hk * sk_h + (p0 * sk_0 + p1 * sk_1 + p2 * sk_2)[:, None] + offs_d[None, :],
                mask=kv_ok[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(V + b * sv_b + hk * sv_h + (p0 * sv_0 + p1 * sv_1 + p2 * sv_2)[:, None] + offs_dv[None, :],
                mask=kv_ok[:, None] & dv_ok[None, :], other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)

    if CORE:   # the queries whose windows hold the whole key box (swapped key range), per axis
        ca0, cb0 = _query_range(tl.minimum(t0 * BN0 + BN0 - 1, Lg0 - 1), tl.minimum(t0 * BN0, Lg0 - 1), Lg0, K0, S0, C0)
        ca1, cb1 = _query_range(tl.minimum(t1 * BN1 + BN1 - 1, Lg1 - 1), tl.minimum(t1 * BN1, Lg1 - 1), Lg1, K1, S1, C1)
        ca2, cb2 = _query_range(tl.minimum(t2 * BN2 + BN2 - 1, Lg2 - 1), tl.minimum(t2 * BN2, Lg2 - 1), Lg2, K2, S2, C2)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    r0, r1, r2 = _box_rows(BM1, BM2, BLOCK_M)
    nb0, nb1, nb2, n_blocks = _walk_len(qa0, qb0, qa1, qb1, qa2, qb2, BM0, BM1, BM2)
    w0, w1, w2 = _walk_start()
    hq = hk * KV_GROUP
    # TMA: the walk's query and dO boxes through descriptors (the head is a coordinate, as the walk
    # moves on to the group's next query head); rows past the walk's bounds then hold real queries,
    # which every mask mode removes (q_ok)
    qd = _box_descriptor(Q + b * sq_b, sq_0, sq_1, sq_2, sq_h, Lg0, Lg1, Lg2, HKV * KV_GROUP, g0, g1, g2,
                         D0, D1, D2, BM0, BM1, BM2, BLOCK_D, TMA)
    dod = _box_descriptor(DO + b * sdo_b, sdo_0, sdo_1, sdo_2, sdo_h, Lg0, Lg1, Lg2, HKV * KV_GROUP, g0, g1, g2,
                          D0, D1, D2, BM0, BM1, BM2, BLOCK_DV, TMA)
    for it in range(0, KV_GROUP * n_blocks):   # every query head of the group, flat (see _walk_block)
        i0, i1, i2, q_ok = _walk_block(w0, w1, w2, qa0, qa1, qa2, qb0, qb1, qb2, r0, r1, r2, BM0, BM1, BM2)
        x0, x1, x2 = _positions(i0, i1, i2, g0, g1, g2, D0, D1, D2)
        if TMA:
            q = _box_load(qd, qa0 + w0 * BM0, qa1 + w1 * BM1, qa2 + w2 * BM2, hq, BLOCK_M, BLOCK_D)
            do = _box_load(dod, qa0 + w0 * BM0, qa1 + w1 * BM1, qa2 + w2 * BM2, hq, BLOCK_M, BLOCK_DV)
        else:
            q = tl.load(Q + b * sq_b + hq * sq_h + (x0 * sq_0 + x1 * sq_1 + x2 * sq_2)[:, None] + offs_d[None, :],
                        mask=q_ok[:, None] & d_ok[None, :], other=0.0)
            do = tl.load(DO + b * sdo_b + hq * sdo_h + (x0 * sdo_0 + x1 * sdo_1 + x2 * sdo_2)[:, None]
                         + offs_dv[None, :], mask=q_ok[:, None] & dv_ok[None, :], other=0.0)
        lse2, delta = load_lse_delta(LD + 2 * (b * sl_b + hq * sl_h), x0 * sl_0 + x1 * sl_1 + x2 * sl_2, q_ok)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        if CORE:
            pt = tl.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale - lse2[None, :])
            if _walk_edge(w0, w1, w2, qa0, qa1, qa2, ca0, cb0, ca1, cb1, ca2, cb2, BM0, BM1, BM2, SKIP0, SKIP1):
                pt = tl.where(_dkv_window_mask(i0, i1, i2, j0, j1, j2, q_ok, Lg0, Lg1, Lg2, K0, K1, K2, S0, S1, S2,
                                               C0, C1, C2, SKIP0, SKIP1), pt, 0.0)
            dk, dv = _dkv_update(dk, dv, pt, v, q, do, delta, PRECISION)
        else:
            if MASK_MODE == 1:
                # the walk starts at a stride-group start (a group's queries share their window), so a
                # box of BM rows with BM | S per axis has one window: its first row's
                lo0, hi0 = _axis_bounds(tl.minimum(qa0 + w0 * BM0, Lg0 - 1), Lg0, K0, S0, C0)
                lo1, hi1 = _axis_bounds(tl.minimum(qa1 + w1 * BM1, Lg1 - 1), Lg1, K1, S1, C1)
                lo2, hi2 = _axis_bounds(tl.minimum(qa2 + w2 * BM2, Lg2 - 1), Lg2, K2, S2, C2)
                key_in = _win_mask(lo0, hi0, j0, lo1, hi1, j1, lo2, hi2, j2, K0, K1, K2, C0, C1, C2, SKIP0, SKIP1)
                mask = key_in[:, None] & q_ok[None, :]
            else:
                mask = _dkv_window_mask(i0, i1, i2, j0, j1, j2, q_ok, Lg0, Lg1, Lg2, K0, K1, K2, S0, S1, S2,
                                        C0, C1, C2, SKIP0, SKIP1)
            dk, dv = _dkv_block(dk, dv, k, v, q, do, lse2, delta, mask, qk_scale, True, PRECISION)
        w0, w1, w2, wrapped = _walk_next(w0, w1, w2, nb0, nb1, nb2, SKIP0, SKIP1)
        hq += wrapped.to(tl.int32)   # the walk starts over for the group's next query head

    kv_mask = kv_ok[:, None]
    tl.store(DK + b * sdk_b + hk * sdk_h + (p0 * sdk_0 + p1 * sdk_1 + p2 * sdk_2)[:, None] + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=kv_mask & d_ok[None, :])
    tl.store(DV + b * sdv_b + hk * sdv_h + (p0 * sdv_0 + p1 * sdv_1 + p2 * sdv_2)[:, None] + offs_dv[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask & dv_ok[None, :])


@triton.jit
def _na_bwd_extra_kv_kernel(
    Q, EK, EV, DO, LD, DEK, DEV,
    sq_b, sq_0, sq_1, sq_2, sq_h,
    sek_b, sek_n, sek_h, sev_b, sev_n, sev_h,
    sdo_b, sdo_0, sdo_1, sdo_2, sdo_h,
    sl_b, sl_0, sl_1, sl_2, sl_h,
    sdek_b, sdek_n, sdek_h, sdev_b, sdev_n, sdev_h,
    HKV, KV_GROUP, L1, L2, N_TOKENS, N_EXTRA, qk_scale, scale,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    WIDE: tl.constexpr, FLAT: tl.constexpr,
):
    """dK, dV of the additional keys: every query attends them, so a key block visits all
    query tokens (row-major over the padded 3-D grid) of every query head of its group."""
    n_blocks = tl.cdiv(N_EXTRA, BLOCK_N)
    pid = tl.program_id(0)
    b, hk = _batch_head(pid // n_blocks, HKV, WIDE, FLAT)
    ej = ((pid % n_blocks) if FLAT else pid) * BLOCK_N + tl.arange(0, BLOCK_N)
    e_ok = ej < N_EXTRA
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    k = tl.load(EK + b * sek_b + hk * sek_h + ej[:, None] * sek_n + offs_d[None, :],
                mask=e_ok[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(EV + b * sev_b + hk * sev_h + ej[:, None] * sev_n + offs_dv[None, :],
                mask=e_ok[:, None] & dv_ok[None, :], other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    rows = tl.arange(0, BLOCK_M)
    for hq in range(hk * KV_GROUP, hk * KV_GROUP + KV_GROUP):
        for start in range(0, N_TOKENS, BLOCK_M):
            t = start + rows
            q_ok = t < N_TOKENS
            x0 = t // (L1 * L2)
            x1 = (t // L2) % L1
            x2 = t % L2
            q = tl.load(Q + b * sq_b + hq * sq_h + (x0 * sq_0 + x1 * sq_1 + x2 * sq_2)[:, None]
                        + offs_d[None, :], mask=q_ok[:, None] & d_ok[None, :], other=0.0)
            do = tl.load(DO + b * sdo_b + hq * sdo_h + (x0 * sdo_0 + x1 * sdo_1 + x2 * sdo_2)[:, None]
                         + offs_dv[None, :], mask=q_ok[:, None] & dv_ok[None, :], other=0.0)
            lse2, delta = load_lse_delta(LD + 2 * (b * sl_b + hq * sl_h), x0 * sl_0 + x1 * sl_1 + x2 * sl_2, q_ok)
            if UPCAST:
                q = q.to(tl.float32)
                do = do.to(tl.float32)
            mask = e_ok[:, None] & q_ok[None, :]
            dk, dv = _dkv_block(dk, dv, k, v, q, do, lse2, delta, mask, qk_scale, True, PRECISION)
    tl.store(DEK + b * sdek_b + hk * sdek_h + ej[:, None] * sdek_n + offs_d[None, :],
             (dk * scale).to(DEK.dtype.element_ty), mask=e_ok[:, None] & d_ok[None, :])
    tl.store(DEV + b * sdev_b + hk * sdev_h + ej[:, None] * sdev_n + offs_dv[None, :],
             dv.to(DEV.dtype.element_ty), mask=e_ok[:, None] & dv_ok[None, :])


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------
_na_fwd = Launcher(_na_fwd_kernel)
_na_bwd_dq = Launcher(_na_bwd_dq_kernel)
_na_bwd_dkv = Launcher(_na_bwd_dkv_kernel)
_na_bwd_extra_kv = Launcher(_na_bwd_extra_kv_kernel)


def _block(d: int) -> int:
    return max(16, next_power_of_2(d))


def _last_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _s5(t: torch.Tensor, trailing: int) -> tuple[int, ...]:
    """Strides of the batch, three (padded) spatial and head axes of ``[B, *spatial, H(, D)]``
    (``trailing`` = 2 with a head-dim axis, 1 for the LSE-like ``[B, *spatial, H]``). 1-D/2-D
    problems run as 3-D ones with leading size-1 axes, whose index is always 0: stride 0."""
    return _s5_of(t.stride(), trailing)


def _s5_of(st: tuple[int, ...], trailing: int) -> tuple[int, ...]:
    """``_s5`` from a stride tuple (the eager program binds its launches before any tensor exists)."""
    rank = len(st) - 1 - trailing
    return (st[0], *(0,) * (3 - rank), *st[1:1 + rank], st[1 + rank])


def _padded_shape(shape) -> tuple[int, int, int]:
    """The spatial sizes of a ``[B, *spatial, H, D]`` shape, padded to 3 axes with leading 1s."""
    return _pad_params(len(shape) - 3, tuple(shape[1:-2]), 1)


def _pad_params(rank: int, values, fill):
    return (fill,) * (3 - rank) + tuple(values)


def _plan(spatial, rank, kernel_size, dilation, stride, is_causal, head_dim: int, kind: str):
    """Padded per-axis sizes, dilation, group lengths and the (query box, key box) of a launch.

    Boxes come from the cost model in ``tiling.py``. Forward: 64 x 64 tiles (64 x 32 above head
    dim 64 for 1-D/2-D windows under 512 keys and where they save products, ``_fwd_key_rows``),
    or 128 x 128 when they cost no more than 5% extra products, windows hold >= 1024 keys and the
    walk needs no per-element window test (long walks of dense tiles, as in 3-D GNA, run faster
    on big tiles), or 32 x 32 on one warp for 1-D/2-D problems at head dim 32 when they walk <=
    0.7x the products (small windows). dQ: 64 x 64. dK/dV: 64 owned key rows
    (the wgmma M side) streaming 64 query rows, 32 for head dims above 64 (dK and dV accumulate
    in registers; 64 would spill), costed as the dK/dV walk (key boxes own, query boxes are
    walked), which favours other boxes than the forward walk. ``kind``: "fwd", "dq" or "dkv".
    """
    shape = _pad_params(rank, spatial, 1)
    dil = _pad_params(rank, dilation, 1)
    glen = tuple(-(-n // d) for n, d in zip(shape, dil))
    window = _padded_window(kernel_size, stride, is_causal, rank)
    if interpret_mode():
        options = [(16, 16)]
    elif kind == "fwd":
        options = [(64, _fwd_key_rows(glen, window, head_dim)), (128, 128)] if head_dim <= 128 else [(64, 32)]
    elif kind == "dq":
        options = [(64, 64)] if head_dim <= 128 else [(64, 32)]
    else:
        options = [(64, 64)] if head_dim <= 64 else [(32, 64)]
    by_keys = kind == "dkv"   # dK/dV programs own key boxes and walk query boxes
    bm, bn, cost = choose_boxes(glen, *window, *options[0], by_keys)
    if len(options) > 1 and math.prod(window[0]) >= 1024:
        bm2, bn2, cost2 = choose_boxes(glen, *window, *options[1], by_keys)
        # only for walks with no per-element window test: on a 2049-key 1-D window (its test on
        # 6% of the blocks, CORE) 64 x 64 ran in 1305 us against 1430 (probe15, session 18)
        if cost2 <= 1.05 * cost and _mask_mode(bm2, bn2, *window) < 2:
            bm, bn = bm2, bn2
    elif kind == "fwd" and head_dim <= 32 and shape[0] == 1 and not interpret_mode():
        # 1-D/2-D small windows: 64-row boxes walk many masked products (4.85x the needed ones
        # on the NA-2D backbone's 7x7, 32x32 boxes 3.17x); at head dim 32 the scores' softmax,
        # not the dots, is the work, and one-warp programs of 32 rows ran 10-27% faster on five
        # such shapes, but 1.9x slower on a 3-D 3x7x7 one (probe33)
        bm2, bn2, cost2 = choose_boxes(glen, *window, 32, 32, by_keys)
        if cost2 <= 0.7 * cost:
            bm, bn = bm2, bn2
    return shape, dil, glen, bm, bn


# 32-key boxes beyond the 1-D/2-D windows under 512 keys: where they walk <= this share of the
# 64-key boxes' products (non-causal, head dims above 64)
FWD_KEY32_SHARE = 0.98


def _fwd_key_rows(glen, window, head_dim: int) -> int:
    """Key rows of the forward's 64-row tiles: 32 or 64. Above head dim 64, 32-key boxes (136
    registers against 176, half the shared memory) ran 2-23% faster on six 1-D/2-D shapes with
    windows under 512 keys (probe39/43/45, session 17), so those take them. Since the TMA walks
    they also win where they save products (probe90, session 38: walks 0.90-0.97x the 64-key
    ones ran 0.87-0.99x the time on eight non-causal 3-D shapes, NA-3D video 0.98x, and 0.94-0.97x
    / 0.84-0.89x on 2-D windows of 1089 and 961 keys), but not at head dim 64 (1.06-1.10x on
    NA-3D video) nor with a causal time axis (1.01-1.17x). Windows whose walk they shorten by
    under 2% (long 1-D windows: 0.3-0.6%) keep 64-key tiles."""
    kernel, _, causal = window
    if head_dim <= 64:
        return 64
    if glen[0] == 1 and math.prod(kernel) < 512:
        return 32
    if any(causal):
        return 64
    c32 = choose_boxes(glen, *window, 64, 32)[2]
    return 32 if c32 <= FWD_KEY32_SHARE * choose_boxes(glen, *window, 64, 64)[2] else 64


def _in_stride_groups(bm, stride, is_causal) -> bool:
    """Query boxes of extent ``bm`` that start at a stride-group start stay inside one group on
    every axis (GNA with strides that are multiples of the box; on causal axes one row, whose
    window ends at the query itself): all their rows share one window."""
    return all(s % m == 0 and (not c or m == 1) for m, s, c in zip(bm, stride, is_causal))


def _mask_mode(bm, bn, kernel, stride, is_causal) -> int:
    """How the forward and dQ walks mask scores (padded per-axis tuples). Query boxes with one
    window for all rows (``_in_stride_groups``): 1 = test only the walk's bounds, 0 = not even
    those (non-causal, the window a whole number of key boxes). Otherwise 2 = test each (query, key)."""
    if not _in_stride_groups(bm, stride, is_causal):
        return 2
    return 0 if not any(is_causal) and all(k % n == 0 for k, n in zip(kernel, bn)) else 1


def _dkv_mask_mode(bm, stride, is_causal) -> int:
    """How the dK/dV walk masks scores: its query walk starts at a stride-group start (queries of a
    group share their window, so the first query whose window meets a key box starts a group), so
    with ``_in_stride_groups`` boxes each walked box has one window: 1 = test the key rows against
    it. Otherwise 2 = test each (key, query)."""
    return 1 if _in_stride_groups(bm, stride, is_causal) else 2


def _boxes_meta(dil, bm, bn) -> dict:
    return dict(D0=dil[0], D1=dil[1], D2=dil[2], BM0=bm[0], BM1=bm[1], BM2=bm[2], BN0=bn[0], BN1=bn[1], BN2=bn[2])


def _padded_window(kernel_size, stride, is_causal, rank):
    return (_pad_params(rank, kernel_size, 1), _pad_params(rank, stride, 1),
            _pad_params(rank, [bool(x) for x in is_causal], False))


def _window_meta(kernel_size, stride, is_causal, rank):
    k, s, c = _padded_window(kernel_size, stride, is_causal, rank)
    return dict(K0=k[0], K1=k[1], K2=k[2], S0=s[0], S1=s[1], S2=s[2], C0=c[0], C1=c[1], C2=c[2])


def _extra_strides(ek, ev):
    if ek is None:
        return (0,) * 6
    return (*ek.stride()[:3], *ev.stride()[:3])


def _extra(t):
    return None if t is None else _last_contiguous(t)


USE_TMA = True   # off: the walks load by pointers (tests run both)


@functools.lru_cache(maxsize=None)
def _tma_device(device: int) -> bool:
    """Device-side tensor descriptors run on sm_90+ (and under the interpreter)."""
    if interpret_mode():
        return True
    return device >= 0 and torch.cuda.get_device_capability(device)[0] >= 9


# Walks shorter than this (tokens per program, ``_walk``) keep pointer loads: a program builds its
# descriptors (global scratch writes, a proxy fence) before its first load, which long walks repay
# and short ones do not. H200, bf16, probe65, TMA / pointer time: walks of 2048-3276 tokens ran
# 0.92-0.98x forward and 0.82-0.93x forward+backward (NA-3D video, GNA-3D, 1-D 2049-key windows);
# walks of 155-576 tokens 1.02-1.23x and 1.06-1.19x (NA-2D large and backbone, GNA-2D, 1-D 257-
# and 513-key windows).
TMA_MIN_WALK = 1024


def _tma(device: int, dtype: torch.dtype, shape3: tuple[int, int, int], head_dims: tuple[int, ...],
         streamed: tuple[tuple[int, ...], ...], aligned: bool, walk: float) -> bool:
    """Whether a walk loads its blocks through TMA descriptors (``_box_descriptor``): walks of at
    least ``TMA_MIN_WALK`` tokens per program (``walk``, from ``_walk``), 16-bit inputs on sm_90+,
    power-of-two head dims (the box is the whole head), 16-byte aligned tensors, and streamed maps
    (``streamed``: their ``_s5`` strides) whose batch, head and spatial strides are multiples of
    16 bytes (a stride 0 only on an axis of length 1) and grow from the head axis outwards.
    ``shape3``: the padded spatial sizes."""
    if not (USE_TMA and aligned and walk >= TMA_MIN_WALK and hasattr(tl, "make_tensor_descriptor")
            and _tma_device(device)
            and dtype in (torch.float16, torch.bfloat16) and all(_block(d) == d for d in head_dims)):
        return False
    size = dtype.itemsize
    for st in streamed:
        b, *axes, h = st
        if (b * size) % 16 or (h * size) % 16 or h <= 0:
            return False
        if any((a * size) % 16 or (a == 0 and n > 1) for a, n in zip(axes, shape3)):
            return False
        # strides that grow from the head to the first axis (contiguous maps, packed qkv): the
        # layouts run on the H200; others (heads-first views) keep pointer loads
        chain = [a for a, n in zip(axes, shape3) if n > 1] + [h]
        if any(outer < inner for outer, inner in zip(chain, chain[1:])):
            return False
    return True


def _launch_tiles(spatial, rank, kernel_size, dilation, stride, is_causal, head_dim, kind, boxes):
    """``_plan`` for one kernel (``boxes`` overrides its tile choice, for sweeps), plus the tiles per
    axis of the boxes its programs own (query boxes; key boxes for "dkv") and the number of
    programs per (batch, head): (shape, dil, bm, bn, tiles, programs)."""
    shape, dil, glen, bm, bn = _plan(spatial, rank, kernel_size, dilation, stride, is_causal, head_dim, kind)
    if boxes is not None:
        bm, bn = boxes
    tiles = [-(-g // m) for g, m in zip(glen, bn if kind == "dkv" else bm)]
    return shape, dil, bm, bn, tiles, math.prod(d * t for d, t in zip(dil, tiles))


@functools.lru_cache(maxsize=256)
def _walk(q_shape, kv_heads, head_dim_v, kernel_size, dilation, stride, is_causal, kind: str, boxes) -> float:
    """Tokens a program of ``kind`` ("fwd", "dq", "dkv") walks, on average: keys for the forward
    and dQ, queries of every head of its GQA group for dK/dV (from the cost model's products)."""
    rank = len(q_shape) - 3
    spatial, heads, head_dim = q_shape[1:-2], q_shape[-2], q_shape[-1]
    head_dim = head_dim if kind == "fwd" else max(head_dim, head_dim_v)
    _, dil, bm, bn, tiles, _ = _launch_tiles(spatial, rank, kernel_size, dilation, stride, is_causal, head_dim,
                                             kind, boxes)
    glen = tuple(-(-n // d) for n, d in zip(_pad_params(rank, spatial, 1), dil))
    by_keys = kind == "dkv"
    products = walk_products(glen, *_padded_window(kernel_size, stride, is_causal, rank), bm, bn, by_keys)
    owned = bn if by_keys else bm
    walk = products / (math.prod(tiles) * math.prod(owned))
    return walk * heads // kv_heads if by_keys else walk


@functools.lru_cache(maxsize=256)
def _fwd_launch(q_shape, kv_heads, head_dim_v, kernel_size, dilation, stride, is_causal, n_extra, dtype, scale,
                boxes):
    """Grid, trailing scalar arguments and meta-parameters of a forward launch, once per problem:
    the host cost of an NA call decides the time of small maps (a backbone's)."""
    rank = len(q_shape) - 3
    batch, *spatial, heads, head_dim = q_shape
    shape, dil, bm, bn, tiles, programs = _launch_tiles(spatial, rank, kernel_size, dilation, stride, is_causal,
                                                        head_dim, "fwd", boxes)
    upcast, precision = dot_precision(dtype)
    grid = heads_grid(programs, batch * heads)
    args = (heads, heads // kv_heads, *shape, n_extra, *tiles, scale * LOG2E)
    meta = dict(**_boxes_meta(dil, bm, bn), **_window_meta(kernel_size, stride, is_causal, rank),
                HEAD_DIM=head_dim, HEAD_DIM_V=head_dim_v, BLOCK_D=_block(head_dim), BLOCK_DV=_block(head_dim_v),
                DTYPE_KEY=str(dtype), UPCAST=upcast, PRECISION=precision,
                FLAT=len(grid) == 1)
    window = _padded_window(kernel_size, stride, is_causal, rank)
    meta["MASK_MODE"] = _mask_mode(bm, bn, *window)
    meta["CORE"] = meta["MASK_MODE"] == 2 and _core_skip(shape, dil, window, bm, bn)
    return grid, args, meta


CORE_SHARE = 0.7   # the share of core blocks from which a walk skips their window test


def _core_skip(shape, dil, window, bm, bn, by_keys: bool = False) -> bool:
    """Whether a walk skips the window test on its core blocks (``CORE``): when they make up >=
    ``CORE_SHARE`` of it (``by_keys``: the dK/dV walk). GPU A/B of the forward (probe45, session
    17): a 1-D window of 2049 keys (0.89 of the blocks) ran 17% faster (and the bench's 513-key
    one, 0.78, 14% against the run before); at shares of 0.62, 0.49 and 0 the branch cost 5%, 0%
    and 1-11%. Backward (probe46, session 18): 3% on those two windows; from a 0.4 share, 2.4% and
    5% slower at 0.61 and 0.49."""
    glen = tuple(-(-n // d) for n, d in zip(shape, dil))
    return core_fraction(glen, *window, bm, bn, by_keys) >= CORE_SHARE


def na_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size, dilation, stride,
               is_causal, scale: float, additional_keys: torch.Tensor | None = None,
               additional_values: torch.Tensor | None = None, out: torch.Tensor | None = None,
               lse: torch.Tensor | None = None, boxes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel on validated arguments (per-axis tuples).

    q: [B, *spatial, H, D]; k: [B, *spatial, Hkv, D]; v: [B, *spatial, Hkv, Dv]; extra keys /
    values [B, N_extra, Hkv, D / Dv]. Inputs may be strided (last dim contiguous). ``out``
    [B, *spatial, H, Dv] and ``lse`` [B, *spatial, H] (float32) may be preallocated (tests pass
    NaN-filled buffers). ``boxes`` = (query box, key box), 3-tuples over the padded axes,
    overrides the tile choice (for tuning sweeps). Returns (O, LSE in natural log).
    """
    if out is None:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
    if lse is None:
        lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    q, k, v = _last_contiguous(q), _last_contiguous(k), _last_contiguous(v)
    ek, ev = _extra(additional_keys), _extra(additional_values)
    problem = (tuple(q.shape), k.shape[-2], v.shape[-1], tuple(kernel_size), tuple(dilation), tuple(stride),
               tuple(is_causal), 0 if ek is None else ek.shape[1], q.dtype)
    grid, args, meta = _fwd_launch(*problem, scale, boxes)
    tensors = (q, k, v, ek if ek is not None else k, ev if ev is not None else v, out, lse)
    strides = (*_s5(q, 2), *_s5(k, 2), *_s5(v, 2), *_extra_strides(ek, ev), *_s5(out, 2), *_s5(lse, 1))
    # the site key: the problem (the plan's key but the scale, a float Triton does not specialize
    # on), the strides, the outputs' dtypes and the pointers' alignment
    align = alignment(*tensors)
    tma = _tma(q.get_device(), q.dtype, _padded_shape(q.shape), (q.shape[-1], v.shape[-1]), (strides[5:10], strides[10:15]),
               align == (0,), _walk(*problem[:7], "fwd", boxes))
    site = (q.get_device(), *problem, boxes, out.dtype, lse.dtype, strides, align, tma)
    wide = _checked_wide(("fwd", site), query=q, key=k, value=v, additional_keys=ek, additional_values=ev,
                         out=out, lse=lse)
    if tma:
        scratch_allocator()
    _na_fwd.launch(site, grid, (*tensors, *strides, *args), {**meta, "WIDE": wide, "TMA": tma})
    return out, lse


_WIDE: dict = {}   # layouts key -> WIDE of the launches, once their tensors passed check_span


def _checked_wide(layouts: tuple, /, **tensors) -> bool:
    """``WIDE`` (64-bit batch offsets) for these tensors, after ``check_item_span`` (``lse``, whose
    layout follows q's, is not checked), once per ``layouts``: a key that holds every layout."""
    wide = _WIDE.get(layouts)
    if wide is None:
        check_item_span(**{n: t for n, t in tensors.items() if n != "lse"})
        wide = wide_offsets(*(None if t is None else (t.shape, t.stride()) for t in tensors.values()))
        if len(_WIDE) < 4096:
            _WIDE[layouts] = wide
    return wide


def na1d_forward(q, k, v, kernel_size: int, scale: float, out=None, lse=None):
    """1-D, dilation 1, stride 1, non-causal forward (kept for the 1-D tests and bench)."""
    return na_forward(q, k, v, (kernel_size,), (1,), (1,), (False,), scale, out=out, lse=lse)


@functools.lru_cache(maxsize=256)
def _bwd_launch(q_shape, kv_heads, head_dim_v, kernel_size, dilation, stride, is_causal, n_extra, dtype, scale,
                has_dlse, boxes):
    """Grids, trailing scalar arguments and meta-parameters of the backward's launches (dQ, dK/dV,
    and the extra-KV kernel when ``n_extra``), once per problem."""
    rank = len(q_shape) - 3
    batch, *spatial, heads, head_dim = q_shape
    upcast, precision = dot_precision(dtype)
    common = dict(**_window_meta(kernel_size, stride, is_causal, rank),
                  HEAD_DIM=head_dim, HEAD_DIM_V=head_dim_v, BLOCK_D=_block(head_dim),
                  BLOCK_DV=_block(head_dim_v), DTYPE_KEY=str(dtype), UPCAST=upcast, PRECISION=precision)
    d_max = max(head_dim, head_dim_v)
    window = (kernel_size, dilation, stride, is_causal)
    shape, dil, bm, bn, tiles_m, programs = _launch_tiles(spatial, rank, *window, d_max, "dq", boxes)
    dq_grid = heads_grid(programs, batch * heads)
    dq_args = (heads, heads // kv_heads, *shape, n_extra, *tiles_m, scale * LOG2E, scale)
    padded = _padded_window(kernel_size, stride, is_causal, rank)
    dq_meta = dict(**_boxes_meta(dil, bm, bn), **common, HAS_DLSE=has_dlse, FLAT=len(dq_grid) == 1,
                   MASK_MODE=_mask_mode(bm, bn, *padded))
    dq_meta["CORE"] = dq_meta["MASK_MODE"] == 2 and _core_skip(shape, dil, padded, bm, bn)
    _, _, bm, bn, tiles_n, programs = _launch_tiles(spatial, rank, *window, d_max, "dkv", boxes)
    dkv_grid = heads_grid(programs, batch * kv_heads)
    dkv_args = (kv_heads, heads // kv_heads, *shape, n_extra, *tiles_n, scale * LOG2E, scale)
    dkv_meta = dict(**_boxes_meta(dil, bm, bn), **common, FLAT=len(dkv_grid) == 1,
                    MASK_MODE=_dkv_mask_mode(bm, *padded[1:]))
    dkv_meta["CORE"] = dkv_meta["MASK_MODE"] == 2 and _core_skip(shape, dil, padded, bm, bn, by_keys=True)
    extra = None
    if n_extra:
        grid = heads_grid(cdiv(n_extra, math.prod(bn)), batch * kv_heads)
        extra = (grid,
                 (kv_heads, heads // kv_heads, shape[1], shape[2], math.prod(shape), n_extra, scale * LOG2E, scale),
                 dict(HEAD_DIM=head_dim, HEAD_DIM_V=head_dim_v, BLOCK_D=_block(head_dim), BLOCK_DV=_block(head_dim_v),
                      BLOCK_M=math.prod(bm), BLOCK_N=math.prod(bn), UPCAST=upcast, PRECISION=precision,
                      FLAT=len(grid) == 1))
    return dq_grid, dq_args, dq_meta, dkv_grid, dkv_args, dkv_meta, extra


def na_backward(grad_out: torch.Tensor, grad_lse: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, kernel_size, dilation, stride,
                is_causal, scale: float, additional_keys: torch.Tensor | None = None,
                additional_values: torch.Tensor | None = None,
                grads: tuple[torch.Tensor, ...] | None = None, boxes=None) -> tuple[torch.Tensor, ...]:
    """Gradients (dq, dk, dv[, d_extra_k, d_extra_v]) of (out, lse) with the fused kernels.

    ``grads`` may hold preallocated gradient buffers in that order (tests poison them).
    """
    q, k, v, grad_out = (_last_contiguous(t) for t in (q, k, v, grad_out))
    ek, ev = _extra(additional_keys), _extra(additional_values)
    if grads is None:
        grads = tuple(torch.empty_like(t, memory_format=torch.contiguous_format)
                      for t in (q, k, v, ek, ev) if t is not None)
    dq, dk, dv = grads[:3]
    # LSE and dLSE contiguous [B, *spatial, H]; the dQ kernel writes each query's (log2 LSE, delta =
    # rowsum(dO * O) - dLSE) pair to ``ld`` [B, *spatial, H, 2] for the dK/dV kernels
    lse = lse.float().contiguous()
    ld = lse.new_empty((*lse.shape, 2))
    dlse = grad_lse.float().contiguous() if grad_lse is not None else lse
    n_extra = 0 if ek is None else ek.shape[1]
    problem = (tuple(q.shape), k.shape[-2], v.shape[-1], tuple(kernel_size), tuple(dilation), tuple(stride),
               tuple(is_causal), n_extra, q.dtype)
    dq_grid, dq_args, dq_meta, dkv_grid, dkv_args, dkv_meta, extra = _bwd_launch(
        *problem, scale, grad_lse is not None, boxes)
    sq, sk, sv, sdo, sl = _s5(q, 2), _s5(k, 2), _s5(v, 2), _s5(grad_out, 2), _s5(lse, 1)
    se = _extra_strides(ek, ev)
    # site keys as in na_forward; lse and dlse are contiguous float32 (one stride set), ld their pairs
    site = (q.get_device(), *problem, grad_lse is not None, boxes, grad_out.dtype, dq.dtype, sq, sk, sv, sdo, sl)
    # one WIDE for the backward's launches, decided by every tensor they touch (once per layout set)
    layouts = (site, se, out.stride(), tuple(g.stride() for g in grads))
    named = dict(query=q, key=k, value=v, additional_keys=ek, additional_values=ev, out=out, grad_out=grad_out,
                 lse=lse, **{f"grad {i}": g for i, g in enumerate(grads)})
    wide = _checked_wide(("bwd", layouts), **named)
    tensors = (q, k, v, ek if ek is not None else k, ev if ev is not None else v, out, grad_out, lse, dlse, ld, dq)
    strides = (*sq, *sk, *sv, *se, *_s5(out, 2), *sdo, *sl, *_s5(dq, 2))
    align = alignment(*tensors)
    device, shape3, dims = q.get_device(), _padded_shape(q.shape), (q.shape[-1], v.shape[-1])
    tma = _tma(device, q.dtype, shape3, dims, (sk, sv), align == (0,), _walk(*problem[:7], "dq", boxes))
    if tma:
        scratch_allocator()
    _na_bwd_dq.launch((*site, out.dtype, strides, align, tma), dq_grid,
                      (*tensors, *strides, *dq_args), {**dq_meta, "WIDE": wide, "TMA": tma})
    tensors = (q, k, v, grad_out, ld, dk, dv)
    strides = (*_s5(dk, 2), *_s5(dv, 2))
    align = alignment(*tensors)
    tma = _tma(device, q.dtype, shape3, dims, (sq, sdo), align == (0,), _walk(*problem[:7], "dkv", boxes))
    if tma:
        scratch_allocator()
    _na_bwd_dkv.launch((*site, dk.dtype, dv.dtype, strides, align, tma), dkv_grid,
                       (*tensors, *sq, *sk, *sv, *sdo, *sl, *strides, *dkv_args), {**dkv_meta, "WIDE": wide, "TMA": tma})
    if extra is not None:   # extra keys given and not empty (empty ones keep their empty gradients)
        dek, dev = grads[3], grads[4]
        grid, args, meta = extra
        meta = {**meta, "WIDE": wide}
        tensors = (q, ek, ev, grad_out, ld, dek, dev)
        strides = (*se, *_extra_strides(dek, dev))
        _na_bwd_extra_kv.launch((*site, dek.dtype, dev.dtype, strides, alignment(*tensors)), grid,
                                (*tensors, *sq, *strides[:6], *sdo, *sl, *strides[6:], *args), meta)
    return tuple(grads)
