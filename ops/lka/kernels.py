"""Triton kernels for large kernel attention (LKA) and its separable family.

Design (by the arithmetic, per element of a [B, C, H, W] map):
- LKA's depthwise 5x5 and dilated 7x7 are 25 + 49 = 74 MACs on CUDA cores. A one-kernel
  version must recompute the 5x5 over an 18-pixel halo (a 16x16 tile needs 34x34 5x5 outputs,
  4.5x recompute: ~160 MACs/element), which on an H200 costs more time in FMA throughput than
  the extra read+write of one intermediate map costs in bandwidth. So the chain is two kernels:
  ``_dw_conv_kernel`` (one depthwise conv, intermediate written in the input dtype) and
  ``_dw_pw_gate_kernel`` (last depthwise conv + 1x1 on tensor cores via ``tl.dot`` over the
  channel dimension + bias + gating multiply, the attention map never reaches memory).
- Every depthwise conv, forward or backward, goes through ONE core, ``_dw_tap_sum``: a
  [pixels, channels] tile accumulated tap by tap in fp32 from strided loads (NCHW and
  channels-last both work by strides). The input gradient of a same-padded depthwise conv is
  the same conv with the kernel flipped (``FLIP``), so the backward reuses the forward kernels.
- Weight/bias gradients (``_dw_wgrad_kernel``): each program owns a run of pixel tiles and, tap
  by tap, accumulates products elementwise over them before one reduction over pixels; it
  writes one [taps + 1, C] partial and ``_dw_wgrad_reduce_kernel`` sums the partials into the
  gradients in the parameters' dtype (no atomics on hot addresses, no torch epilogue).
- ``_pw_gate_bwd_kernel``: from the pre-1x1 map s, the input x and the output gradient g it
  writes dx = g * t (t = W1 s + b1, recomputed), dt = g * x and ds = W1^T dt; the 1x1 weight
  gradient dt^T s is one tensor-core matmul in torch.
"""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from ..common import interpret_mode
from ..common.tuning import Launcher, cdiv, next_power_of_2

__all__ = ["dw_conv", "dw_conv_pw_gate", "dw_conv_weight_grad", "pw_gate_backward"]


@triton.jit
def _pixel_tile(tile, n_ptiles, H, W, BLOCK_P: tl.constexpr):
    """Tile index -> (batch, pixel rows, pixel cols, valid mask) of a BLOCK_P-pixel tile."""
    offs_p = (tile % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    return tile // n_ptiles, offs_p // W, offs_p % W, offs_p < H * W


@triton.jit
def _pw_tile(s, W1, B1, offs_ci, ci_mask, co0, C, BLOCK_CO: tl.constexpr, PRECISION: tl.constexpr):
    """One output-channel block of the 1x1 conv: t = s @ W1[co, :]^T + b1 (fp32 [P, BLOCK_CO]);
    also returns W1^T's block [CI, CO] (in s's dtype) and the block's channels and mask."""
    offs_co = co0 + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < C
    w1t = tl.load(W1 + offs_co[None, :] * C + offs_ci[:, None],
                  mask=ci_mask[:, None] & co_mask[None, :], other=0.0).to(s.dtype)
    t = tl.dot(s, w1t, input_precision=PRECISION)
    t += tl.load(B1 + offs_co, mask=co_mask, other=0.0).to(tl.float32)[None, :]
    return t, w1t, offs_co, co_mask


@triton.jit
def _tap_load(x_base, sxc, sxh, sxw, hh, h_ok, ww, offs_c, c_mask, W):
    """x[c, hh, ww] as fp32 [P, C] for one tap's shifted pixel rows ``hh`` / cols ``ww``; zero
    outside the map (``h_ok``: row inside and pixel valid, hoisted out of the column loop)."""
    m = h_ok & (ww >= 0) & (ww < W)
    return tl.load(x_base + hh[:, None] * sxh + ww[:, None] * sxw + offs_c[None, :] * sxc,
                   mask=m[:, None] & c_mask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _dw_tap_sum(x_base, sxc, sxh, sxw, w_ptr, offs_h, offs_w, offs_c, p_mask, c_mask, H, W,
                KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """sum_{kh,kw} w[c, kh, kw] * x[c, h - PH + kh*DIL, w - PW + kw*DIL] (zero outside) -> fp32 [P, C]."""
    PH: tl.constexpr = DIL * (KH - 1) // 2
    PW: tl.constexpr = DIL * (KW - 1) // 2
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    # Rows are a runtime loop, columns unrolled: fully unrolling a 7x7 tap grid over 64x64 tiles
    # took minutes to compile for sm_90.
    for kh in range(KH):
        hh = offs_h - PH + kh * DIL
        h_ok = p_mask & (hh >= 0) & (hh < H)
        for kw in tl.static_range(KW):
            xv = _tap_load(x_base, sxc, sxh, sxw, hh, h_ok, offs_w - PW + kw * DIL, offs_c, c_mask, W)
            if FLIP:
                tap = (KH - 1 - kh) * KW + (KW - 1 - kw)
            else:
                tap = kh * KW + kw
            wv = tl.load(w_ptr + offs_c * (KH * KW) + tap, mask=c_mask, other=0.0).to(tl.float32)
            acc += xv * wv[None, :]
    return acc


@triton.jit
def _dw_conv_kernel(
    X, Wt, Bias, R, Y,
    sxb, sxc, sxh, sxw,
    srb, src, srh, srw,
    syb, syc, syh, syw,
    C, H, W, n_ptiles,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = depthwise_conv(x) (+ bias) (+ r), one [BLOCK_P pixels, BLOCK_C channels] tile per program."""
    b, offs_h, offs_w, p_mask = _pixel_tile(tl.program_id(0), n_ptiles, H, W, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    acc = _dw_tap_sum(X + b * sxb, sxc, sxh, sxw, Wt, offs_h, offs_w, offs_c, p_mask, c_mask, H, W,
                      KH, KW, DIL, FLIP, BLOCK_P, BLOCK_C)
    if HAS_BIAS:
        acc += tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    m = p_mask[:, None] & c_mask[None, :]
    if HAS_RES:
        acc += tl.load(R + b * srb + offs_h[:, None] * srh + offs_w[:, None] * srw + offs_c[None, :] * src,
                       mask=m, other=0.0).to(tl.float32)
    tl.store(Y + b * syb + offs_h[:, None] * syh + offs_w[:, None] * syw + offs_c[None, :] * syc,
             acc.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _dw_row_block(x_base, sxh, sxw, w_ptr, offs_w, offs_c, c_mask, phase, m0, H, W,
                  KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr,
                  ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """Depthwise conv of ROWS output rows ``phase + DIL * (m0 + r)`` (one dilation phase: their
    input rows are the same phase's) over a [BLOCK_W cols, BLOCK_C channels] strip -> a tuple of
    ROWS fp32 [W, C] tiles (zero padding outside the map; ``x_base`` points at the batch item
    and channels). Each loaded input row serves every output row its column of taps reaches:
    ROWS + KH - 1 loads per kernel column instead of ROWS * KH, so the taps cost one FMA each
    plus a fraction of a load and a conversion."""
    HALF: tl.constexpr = (KH - 1) // 2
    PW: tl.constexpr = DIL * (KW - 1) // 2
    accs = (tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32),) * ROWS
    for kw in range(KW):   # runtime loop; the rows and the taps of a column are unrolled
        ww = offs_w - PW + kw * DIL
        m = ((ww >= 0) & (ww < W))[:, None] & c_mask[None, :]
        col = x_base + ww[:, None] * sxw
        ws = ()
        for kh in tl.static_range(KH):
            if FLIP:
                tap = (KH - 1 - kh) * KW + (KW - 1 - kw)
            else:
                tap = kh * KW + kw
            ws = ws + (tl.load(w_ptr + offs_c * (KH * KW) + tap, mask=c_mask, other=0.0).to(tl.float32)[None, :],)
        for j in tl.static_range(ROWS + KH - 1):
            row = phase + DIL * (m0 + j - HALF)
            xv = tl.load(col + row * sxh, mask=m & (row >= 0) & (row < H), other=0.0).to(tl.float32)
            for kh in tl.static_range(KH):
                if j - kh >= 0 and j - kh < ROWS:
                    accs = accs[:j - kh] + (accs[j - kh] + xv * ws[kh],) + accs[j - kh + 1:]
    return accs


@triton.jit
def _dw_rows_kernel(
    X, Wt, Bias, R, Y,
    sxb, sxc, sxh, sxw,
    srb, src, srh, srw,
    syb, syc, syh, syw,
    C, H, W, n_rblocks,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = depthwise_conv(x) (+ bias) (+ r): one program per (batch item, dilation phase, block
    of ROWS rows of that phase) x column strip x channel block, through ``_dw_row_block``."""
    pid = tl.program_id(0)
    per_b = DIL * n_rblocks
    b = pid // per_b
    phase = (pid % per_b) % DIL
    m0 = ((pid % per_b) // DIL) * ROWS
    offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    accs = _dw_row_block(X + b * sxb + offs_c[None, :] * sxc, sxh, sxw, Wt, offs_w, offs_c, c_mask,
                         phase, m0, H, W, KH, KW, DIL, FLIP, ROWS, BLOCK_W, BLOCK_C)
    m = (offs_w < W)[:, None] & c_mask[None, :]
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    for r in tl.static_range(ROWS):
        row = phase + DIL * (m0 + r)
        acc = accs[r]
        if HAS_BIAS:
            acc += bias
        mr = m & (row < H)
        if HAS_RES:
            acc += tl.load(R + b * srb + row * srh + offs_w[:, None] * srw + offs_c[None, :] * src,
                           mask=mr, other=0.0).to(tl.float32)
        tl.store(Y + b * syb + row * syh + offs_w[:, None] * syw + offs_c[None, :] * syc,
                 acc.to(Y.dtype.element_ty), mask=mr)


@triton.jit
def _dw_pw_gate_kernel(
    A, Wd, Bd, W1, B1, X, OUT,
    sab, sac, sah, saw,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    C, H, W, n_ptiles,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, HAS_DW: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """out = x * (W1 @ (depthwise_conv(a) + bd) + b1): the last conv of the chain, the 1x1 and the
    gate; without ``HAS_DW``, ``a`` is the last conv's output s and only the 1x1 and gate run."""
    b, offs_h, offs_w, p_mask = _pixel_tile(tl.program_id(0), n_ptiles, H, W, BLOCK_P)
    offs_ci = tl.arange(0, BLOCK_CI)
    ci_mask = offs_ci < C
    if HAS_DW:
        s = _dw_tap_sum(A + b * sab, sac, sah, saw, Wd, offs_h, offs_w, offs_ci, p_mask, ci_mask, H, W,
                        KH, KW, DIL, False, BLOCK_P, BLOCK_CI)
        s += tl.load(Bd + offs_ci, mask=ci_mask, other=0.0).to(tl.float32)[None, :]
    else:
        s = tl.load(A + b * sab + offs_h[:, None] * sah + offs_w[:, None] * saw + offs_ci[None, :] * sac,
                    mask=p_mask[:, None] & ci_mask[None, :], other=0.0).to(tl.float32)
    if UPCAST:  # fp32 operands: exact dot (and the interpreter's bf16 dot is wrong)
        s_op = s
    else:
        s_op = s.to(X.dtype.element_ty)
    for co0 in range(0, C, BLOCK_CO):
        t, w1t, offs_co, co_mask = _pw_tile(s_op, W1, B1, offs_ci, ci_mask, co0, C, BLOCK_CO, PRECISION)
        m = p_mask[:, None] & co_mask[None, :]
        u = tl.load(X + b * sxb + offs_h[:, None] * sxh + offs_w[:, None] * sxw + offs_co[None, :] * sxc,
                    mask=m, other=0.0).to(tl.float32)
        tl.store(OUT + b * sob + offs_h[:, None] * soh + offs_w[:, None] * sow + offs_co[None, :] * soc,
                 (u * t).to(OUT.dtype.element_ty), mask=m)


@triton.jit
def _pw_gate_bwd_kernel(
    S, W1, B1, X, G, DX, DT, DS,
    ssb, ssc, ssh, ssw,
    sxb, sxc, sxh, sxw,
    sgb, sgc, sgh, sgw,
    sdxb, sdxc, sdxh, sdxw,
    stb, stc, sth, stw,
    sdsb, sdsc, sdsh, sdsw,
    C, H, W, n_ptiles,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """Backward of out = x * (W1 s + b1): dx = g * t, dt = g * x, ds = W1^T dt."""
    b, offs_h, offs_w, p_mask = _pixel_tile(tl.program_id(0), n_ptiles, H, W, BLOCK_P)
    offs_ci = tl.arange(0, BLOCK_CI)
    ci_mask = offs_ci < C
    mi = p_mask[:, None] & ci_mask[None, :]
    s = tl.load(S + b * ssb + offs_h[:, None] * ssh + offs_w[:, None] * ssw + offs_ci[None, :] * ssc,
                mask=mi, other=0.0)
    if UPCAST:
        s = s.to(tl.float32)
    ds = tl.zeros([BLOCK_P, BLOCK_CI], dtype=tl.float32)
    for co0 in range(0, C, BLOCK_CO):
        t, w1t, offs_co, co_mask = _pw_tile(s, W1, B1, offs_ci, ci_mask, co0, C, BLOCK_CO, PRECISION)
        m = p_mask[:, None] & co_mask[None, :]
        pix = offs_h[:, None] * sxh + offs_w[:, None] * sxw
        u = tl.load(X + b * sxb + pix + offs_co[None, :] * sxc, mask=m, other=0.0).to(tl.float32)
        g = tl.load(G + b * sgb + offs_h[:, None] * sgh + offs_w[:, None] * sgw + offs_co[None, :] * sgc,
                    mask=m, other=0.0).to(tl.float32)
        tl.store(DX + b * sdxb + offs_h[:, None] * sdxh + offs_w[:, None] * sdxw + offs_co[None, :] * sdxc,
                 (g * t).to(DX.dtype.element_ty), mask=m)
        dt = (g * u).to(s.dtype)
        tl.store(DT + b * stb + offs_h[:, None] * sth + offs_w[:, None] * stw + offs_co[None, :] * stc,
                 dt.to(DT.dtype.element_ty), mask=m)
        ds += tl.dot(dt, tl.trans(w1t), input_precision=PRECISION)
    tl.store(DS + b * sdsb + offs_h[:, None] * sdsh + offs_w[:, None] * sdsw + offs_ci[None, :] * sdsc,
             ds.to(DS.dtype.element_ty), mask=mi)


@triton.jit
def _dw_wgrad_kernel(
    DY, X, PART,
    sgb, sgc, sgh, sgw,
    sxb, sxc, sxh, sxw,
    C, H, W, n_ptiles, total_tiles, per_split,
    KH: tl.constexpr, KW: tl.constexpr, KWB: tl.constexpr, DIL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """PART[split, tap, c] = sum over this split's pixels of dy[c, p] * x[c, p + offset(tap)];
    row KH*KW holds sum dy (the bias gradient).

    A split owns ``per_split`` consecutive pixel tiles. Taps outer in chunks of KWB columns of one
    kernel row, tiles inner: for each chunk a tile's dy is loaded once and multiplied with the
    chunk's shifted x tiles (one [KWB, P, C] load), the products accumulate elementwise over the
    split's tiles and are reduced over pixels once per chunk. (With tiles outer, every tap of every
    tile paid a cross-warp reduction, which cost more than the products.) KWB = 8 covers a 7-wide
    row in one chunk (one dy load per row instead of per tap); KWB = 1 is one tap at a time, which
    probe20 measured faster for 5x5 kernels (8-wide chunks would waste 3 of 8 lanes) and 7x7 maps.
    A split's run of tiles stays in L1/L2 across the chunks."""
    split = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    PH: tl.constexpr = DIL * (KH - 1) // 2
    PW: tl.constexpr = DIL * (KW - 1) // 2
    first = split * per_split
    last = tl.minimum(first + per_split, total_tiles)
    out = PART + split * ((KH * KW + 1) * C)
    bias = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for tile in range(first, last):
        b, offs_h, offs_w, p_mask = _pixel_tile(tile, n_ptiles, H, W, BLOCK_P)
        bias += tl.load(DY + b * sgb + offs_h[:, None] * sgh + offs_w[:, None] * sgw + offs_c[None, :] * sgc,
                        mask=p_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
    tl.store(out + (KH * KW) * C + offs_c, tl.sum(bias, axis=0), mask=c_mask)
    for kh in range(KH):  # runtime loop over rows, column chunks unrolled (as in _dw_tap_sum)
        for kw0 in tl.static_range(0, KW, KWB):
            kw = kw0 + tl.arange(0, KWB)
            kw_ok = kw < KW
            acc = tl.zeros([KWB, BLOCK_P, BLOCK_C], dtype=tl.float32)
            for tile in range(first, last):
                b, offs_h, offs_w, p_mask = _pixel_tile(tile, n_ptiles, H, W, BLOCK_P)
                dy = tl.load(DY + b * sgb + offs_h[:, None] * sgh + offs_w[:, None] * sgw + offs_c[None, :] * sgc,
                             mask=p_mask[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
                hh = offs_h - PH + kh * DIL
                h_ok = p_mask & (hh >= 0) & (hh < H)
                ww = offs_w[None, :] - PW + kw[:, None] * DIL                        # [KWB, P]
                m = h_ok[None, :] & (ww >= 0) & (ww < W) & kw_ok[:, None]
                x3 = tl.load(X + b * sxb + (hh[None, :] * sxh + ww * sxw)[:, :, None] + offs_c[None, None, :] * sxc,
                             mask=m[:, :, None] & c_mask[None, None, :], other=0.0).to(tl.float32)
                acc += dy[None, :, :] * x3
            tl.store(out + (kh * KW + kw)[:, None] * C + offs_c[None, :], tl.sum(acc, axis=1),
                     mask=kw_ok[:, None] & c_mask[None, :])


@triton.jit
def _dw_wgrad_rows_kernel(
    DY, X, PART,
    sgb, sgc, sgh, sgw,
    sxb, sxc, sxh, sxw,
    C, H, W, n_rblocks, n_strips, total, per_split,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """PART[split, tap, c] = sum over this split's items of dy[c, p] * x[c, p + offset(tap)]; row
    KH*KW holds sum dy (the bias gradient). An item is ``_dw_rows_kernel``'s unit: ROWS rows of
    one dilation phase of one batch item, over one [BLOCK_W, BLOCK_C] column strip.

    Kernel columns outer (runtime loop), the split's items inner: per item the ROWS dy rows and
    the ROWS + KH - 1 input rows shifted by the column are loaded once, and each input row is
    multiplied with the dy rows of every kernel row it meets, into KH elementwise accumulators
    that are reduced over the strip once per column. The split's items stay in L1/L2 across the
    KW columns."""
    split = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    HALF: tl.constexpr = (KH - 1) // 2
    PW: tl.constexpr = DIL * (KW - 1) // 2
    first = split * per_split
    last = tl.minimum(first + per_split, total)
    out = PART + split * ((KH * KW + 1) * C)
    bias = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    for kw in range(KW):
        prods = (tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32),) * KH
        for item in range(first, last):
            strip = item % n_strips
            rest = item // n_strips
            phase = rest % DIL
            m0 = ((rest // DIL) % n_rblocks) * ROWS
            b = rest // (DIL * n_rblocks)
            offs_w = strip * BLOCK_W + tl.arange(0, BLOCK_W)
            mg = (offs_w < W)[:, None] & c_mask[None, :]
            ww = offs_w - PW + kw * DIL
            mx = ((ww >= 0) & (ww < W))[:, None] & c_mask[None, :]
            g_col = DY + b * sgb + offs_w[:, None] * sgw + offs_c[None, :] * sgc
            x_col = X + b * sxb + ww[:, None] * sxw + offs_c[None, :] * sxc
            dys = ()
            for r in tl.static_range(ROWS):
                row = phase + DIL * (m0 + r)
                dys = dys + (tl.load(g_col + row * sgh, mask=mg & (row < H), other=0.0).to(tl.float32),)
            if kw == 0:
                for r in tl.static_range(ROWS):
                    bias += dys[r]
            for j in tl.static_range(ROWS + KH - 1):
                row = phase + DIL * (m0 + j - HALF)
                xv = tl.load(x_col + row * sxh, mask=mx & (row >= 0) & (row < H), other=0.0).to(tl.float32)
                for kh in tl.static_range(KH):
                    if j - kh >= 0 and j - kh < ROWS:
                        prods = prods[:kh] + (prods[kh] + dys[j - kh] * xv,) + prods[kh + 1:]
        for kh in tl.static_range(KH):
            tl.store(out + (kh * KW + kw) * C + offs_c, tl.sum(prods[kh], axis=0), mask=c_mask)
    tl.store(out + (KH * KW) * C + offs_c, tl.sum(bias, axis=0), mask=c_mask)


@triton.jit
def _dw_wgrad_reduce_kernel(PART, DW, DB, nsplit, C, TAPS: tl.constexpr, BLOCK_S: tl.constexpr,
                            BLOCK_C: tl.constexpr):
    """Sums the per-split partials of one row (a tap, or the bias row ``TAPS``) into the weight
    gradient [C, TAPS] or the bias gradient [C], in their own dtypes."""
    row = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    offs_s = tl.arange(0, BLOCK_S)
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for s0 in range(0, nsplit, BLOCK_S):
        split = s0 + offs_s
        acc += tl.sum(tl.load(PART + split[:, None] * ((TAPS + 1) * C) + row * C + offs_c[None, :],
                              mask=(split < nsplit)[:, None] & c_mask[None, :], other=0.0), axis=0)
    if row < TAPS:
        tl.store(DW + offs_c * TAPS + row, acc.to(DW.dtype.element_ty), mask=c_mask)
    else:
        tl.store(DB + offs_c, acc.to(DB.dtype.element_ty), mask=c_mask)


# ----------------------------------------------------------------------------------- launchers

_dw_conv = Launcher(_dw_conv_kernel)
_dw_rows = Launcher(_dw_rows_kernel)
_dw_pw_gate = Launcher(_dw_pw_gate_kernel)
_pw_gate_bwd = Launcher(_pw_gate_bwd_kernel)
_dw_wgrad = Launcher(_dw_wgrad_kernel)
_dw_wgrad_rows = Launcher(_dw_wgrad_rows_kernel)
_dw_wgrad_reduce = Launcher(_dw_wgrad_reduce_kernel)


# Under the interpreter every Triton op costs the same whatever its block size, so the blocks
# are as large as the (small) test problem: few programs, fast tests.
def _interp_pixel_block(hw: int) -> int:
    return min(256, max(16, next_power_of_2(hw)))


def _pixel_block(channels_block: int, hw: int) -> int:
    if interpret_mode():
        return _interp_pixel_block(hw)
    return max(16, min(128, 4096 // channels_block))


def _channel_block(c: int) -> int:
    return min(64, max(16, next_power_of_2(c)))


def _dot_precision(dtype: torch.dtype) -> tuple[bool, str]:
    upcast = dtype == torch.float32 or (interpret_mode() and dtype == torch.bfloat16)
    return upcast, "ieee" if upcast else "tf32"


_ROWS = os.environ.get("FOVEAL_LKA_ROWS", "1") == "1"
_SPLIT_PW = os.environ.get("FOVEAL_LKA_SPLIT_PW", "1") == "1"
_ROWS_WGRAD = os.environ.get("FOVEAL_LKA_ROWS_WGRAD", "1") == "1"


def _rows_config(c: int, h: int, w: int, dilation: int, max_rows: int = 12) -> tuple[int, int, int, int]:
    """(ROWS, BLOCK_W, BLOCK_C, num_warps) of the row-block kernels: up to ``max_rows`` rows per
    program (a phase's rows split into equal blocks), strips of 1024 elements (8 per thread at 4
    warps) with as many channels as fit. probe21 (H200): 12 rows for the 7x7 d3 conv, 82 vs 92 us
    with 8 at B64 C64 56x56, 41 vs 60 at B64 C128 28x28."""
    per_phase = cdiv(h, dilation)
    rows = cdiv(per_phase, cdiv(per_phase, max_rows))
    if interpret_mode():
        return rows, min(32, next_power_of_2(w)), min(32, next_power_of_2(c)), 4
    block_w = min(next_power_of_2(w), 16 if c >= 64 else 32)
    block_c = min(max(16, next_power_of_2(c)), 1024 // block_w)
    return rows, block_w, block_c, 4


def dw_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int,
            flip: bool = False, residual: torch.Tensor | None = None,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Same-padded depthwise conv. x [B, C, H, W] (any strides), weight [C, 1, kh, kw] odd, bias [C].

    ``flip`` convolves with the spatially flipped kernel (the input gradient of the conv);
    ``residual`` [B, C, H, W] is added to the result. ``out`` may be preallocated (any strides).
    """
    bsz, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    weight = weight.reshape(c, kh * kw).contiguous()
    if out is None:
        out = torch.empty_like(x)
    res = residual if residual is not None else out
    if _ROWS:
        rows, block_w, block_c, warps = _rows_config(c, h, w, dilation)
        n_rblocks = cdiv(cdiv(h, dilation), rows)
        _dw_rows[(bsz * dilation * n_rblocks, cdiv(w, block_w), cdiv(c, block_c))](
            x, weight, bias if bias is not None else weight, res, out,
            *x.stride(), *res.stride(), *out.stride(),
            c, h, w, n_rblocks,
            KH=kh, KW=kw, DIL=dilation, FLIP=flip, HAS_BIAS=bias is not None, HAS_RES=residual is not None,
            ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps,
        )
        return out
    block_c = _channel_block(c)
    block_p = _pixel_block(block_c, h * w)
    n_ptiles = cdiv(h * w, block_p)
    _dw_conv[(bsz * n_ptiles, cdiv(c, block_c))](
        x, weight, bias if bias is not None else weight, res, out,
        *x.stride(), *res.stride(), *out.stride(),
        c, h, w, n_ptiles,
        KH=kh, KW=kw, DIL=dilation, FLIP=flip, HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4,
    )
    return out


def _pw_config(c: int, hw: int, kind: str) -> tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_CI, BLOCK_CO, num_warps) of the 1x1 + gate kernels; ``kind`` is "fwd"
    (``_dw_pw_gate_kernel``) or "bwd" (``_pw_gate_bwd_kernel``). Every input channel of a pixel
    is in one tile (the 1x1 contracts over them), so wide layers take fewer pixels per tile."""
    block_ci = max(16, next_power_of_2(c))
    block_co = min(64, block_ci)
    if kind == "fwd" and block_ci == 128:
        # the depthwise taps and the 1x1 share registers: at 64 pixels and 4 warps the C128
        # kernel spilled 8.5 KB per thread on sm_90; 32 pixels at 8 warps: 0.6 KB, and on the
        # H200 the C128 28x28 forward took 0.38 instead of 0.50 ms at batch 128. The same tiles
        # were slower at 160-256 channels and for the backward (probe12, session 5).
        budget, warps = 4096, 8
    else:
        budget, warps = 8192, 4 if block_ci <= 128 else 8
    block_p = _interp_pixel_block(hw) if interpret_mode() else max(16, min(64, budget // block_ci))
    return block_p, block_ci, block_co, warps


def _pw_weight(conv1_weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 1x1 weight as a [C_out, C_in] matrix in the activations' dtype. Unlike the depthwise
    taps it is cast on the host: the kernels stream it through shared memory in blocks that the
    pipeliner multi-buffers, and fp32 blocks (autocast's parameters) overflowed shared memory at
    512 channels and cut occupancy at 256 (VAN-b2 OutOfResources, VAN-b0 2x slower; session 5)."""
    c = conv1_weight.shape[0]
    return conv1_weight.reshape(c, c).to(dtype).contiguous()


def dw_conv_pw_gate(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dilation: int,
                    conv1_weight: torch.Tensor, conv1_bias: torch.Tensor, x: torch.Tensor,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """out = x * conv1x1(dw_conv(a, weight, bias, dilation)). a, x, out: [B, C, H, W] (any strides)."""
    bsz, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    has_dw = not _SPLIT_PW
    if _SPLIT_PW:   # the last conv by the row-block kernel, then the 1x1 and the gate
        a = dw_conv(a, weight, bias, dilation, out=torch.empty_like(x, memory_format=torch.channels_last))
    weight = weight.reshape(c, kh * kw).contiguous()
    w1 = _pw_weight(conv1_weight, x.dtype)
    if out is None:
        out = torch.empty_like(x)
    block_p, block_ci, block_co, warps = _pw_config(c, h * w, "fwd")
    upcast, precision = _dot_precision(x.dtype)
    n_ptiles = cdiv(h * w, block_p)
    _dw_pw_gate[(bsz * n_ptiles,)](
        a, weight, bias, w1, conv1_bias, x, out,
        *a.stride(), *x.stride(), *out.stride(),
        c, h, w, n_ptiles,
        KH=kh, KW=kw, DIL=dilation, HAS_DW=has_dw, UPCAST=upcast, PRECISION=precision,
        BLOCK_P=block_p, BLOCK_CI=block_ci, BLOCK_CO=block_co, num_warps=warps,
    )
    return out


def pw_gate_backward(s: torch.Tensor, conv1_weight: torch.Tensor, conv1_bias: torch.Tensor,
                     x: torch.Tensor, grad: torch.Tensor, dx: torch.Tensor | None = None,
                     dt: torch.Tensor | None = None, ds: torch.Tensor | None = None):
    """Backward of out = x * (W1 s + b1). Returns (dx = g*t, dt = g*x, ds = W1^T dt), [B, C, H, W] each.

    ``dt`` is allocated channels-last so ``dt^T s`` (the 1x1 weight gradient) is a plain matmul.
    """
    bsz, c, h, w = x.shape
    w1 = _pw_weight(conv1_weight, x.dtype)
    dx = torch.empty_like(x) if dx is None else dx
    dt = torch.empty_like(x, memory_format=torch.channels_last) if dt is None else dt
    ds = torch.empty_like(x, memory_format=torch.channels_last) if ds is None else ds
    block_p, block_ci, block_co, warps = _pw_config(c, h * w, "bwd")
    upcast, precision = _dot_precision(x.dtype)
    n_ptiles = cdiv(h * w, block_p)
    _pw_gate_bwd[(bsz * n_ptiles,)](
        s, w1, conv1_bias, x, grad, dx, dt, ds,
        *s.stride(), *x.stride(), *grad.stride(), *dx.stride(), *dt.stride(), *ds.stride(),
        c, h, w, n_ptiles, UPCAST=upcast, PRECISION=precision,
        BLOCK_P=block_p, BLOCK_CI=block_ci, BLOCK_CO=block_co, num_warps=warps,
    )
    return dx, dt, ds


@functools.cache
def _sm_count(device_index: int | None) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _wgrad_config(kw: int, block_c: int, hw: int) -> tuple[int, int, int]:
    """(KWB, BLOCK_P, num_warps) of ``_dw_wgrad_kernel``, from probe20 on VAN's layer shapes (H200):
    7-wide rows in one 8-column chunk on maps of >= 14x14 pixels (C64 56x56 at batch 128: 1339 ->
    825 us), with 32-pixel tiles at 4 warps (~190 registers, no spills for sm_90; 8 warps measured
    slower); otherwise one tap at a time on 64-pixel tiles."""
    if interpret_mode():
        return (next_power_of_2(kw) if kw >= 7 else 1), _interp_pixel_block(hw) // 2, 4
    if kw >= 7 and hw >= 196:
        kwb = next_power_of_2(kw)
        return kwb, min(64, max(16, 8192 // (kwb * block_c))), 4
    return 1, 64, 4


def dw_conv_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel_size: tuple[int, int], dilation: int,
                        weight_dtype: torch.dtype = torch.float32,
                        bias_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of a same-padded depthwise conv's weight [C, 1, kh, kw] and bias [C], accumulated
    in fp32 and returned in ``weight_dtype`` / ``bias_dtype``.

    grad: dL/dy [B, C, H, W]; x: the conv's input. Per-split partials, then one reduction launch.
    """
    bsz, c, h, w = x.shape
    kh, kw = kernel_size
    taps = kh * kw
    if _ROWS_WGRAD:
        rows, block_w, block_c, warps = _rows_config(c, h, w, dilation, max_rows=8)
        n_rblocks, n_strips = cdiv(cdiv(h, dilation), rows), cdiv(w, block_w)
        total = bsz * dilation * n_rblocks * n_strips
        n_cblocks = cdiv(c, block_c)
        if interpret_mode():
            nsplit = min(total, 2)  # still exercises the split reduction
        else:
            nsplit = max(1, min(total, 4 * _sm_count(x.device.index) // n_cblocks))
        # a split re-reads its items once per kernel column: at most ~512 pixels stay in L1
        per_split = min(cdiv(total, nsplit), max(1, 512 // (rows * block_w)))
        nsplit = cdiv(total, per_split)
        part = torch.empty(nsplit, taps + 1, c, device=x.device, dtype=torch.float32)
        _dw_wgrad_rows[(nsplit, n_cblocks)](
            grad, x, part, *grad.stride(), *x.stride(),
            c, h, w, n_rblocks, n_strips, total, per_split,
            KH=kh, KW=kw, DIL=dilation, ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps,
        )
    else:
        block_c = min(32, max(16, next_power_of_2(c)))
        kwb, block_p, warps = _wgrad_config(kw, block_c, h * w)
        n_ptiles = cdiv(h * w, block_p)
        total = bsz * n_ptiles
        n_cblocks = cdiv(c, block_c)
        if interpret_mode():
            nsplit = min(total, 2)  # still exercises the split reduction
        else:
            nsplit = max(1, min(total, 4 * _sm_count(x.device.index) // n_cblocks))
        # at most 512 pixels per split: a split re-reads its tiles once per chunk of taps, and longer
        # runs fell out of L1 (probe12: C64 56x56 at batch 128 was slower at ~24 64-pixel tiles)
        per_split = min(cdiv(total, nsplit), 512 // block_p)
        nsplit = cdiv(total, per_split)
        part = torch.empty(nsplit, taps + 1, c, device=x.device, dtype=torch.float32)
        _dw_wgrad[(nsplit, n_cblocks)](
            grad, x, part, *grad.stride(), *x.stride(),
            c, h, w, n_ptiles, total, per_split,
            KH=kh, KW=kw, KWB=kwb, DIL=dilation, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=warps,
        )
    dw = torch.empty(c, 1, kh, kw, device=x.device, dtype=weight_dtype)
    db = torch.empty(c, device=x.device, dtype=bias_dtype)
    block_rc = min(64, max(16, next_power_of_2(c)))
    _dw_wgrad_reduce[(taps + 1, cdiv(c, block_rc))](
        part, dw, db, nsplit, c, TAPS=taps, BLOCK_S=32, BLOCK_C=block_rc, num_warps=4)
    return dw, db
