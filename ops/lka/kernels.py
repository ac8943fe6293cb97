"""Triton kernels for large kernel attention (LKA) and its separable family.

Design (by the arithmetic, per element of a [B, C, H, W] map):
- LKA's depthwise 5x5 and dilated 7x7 are 25 + 49 = 74 MACs on CUDA cores; fusing the chain into
  one kernel would recompute the 5x5 over the 7x7's 18-pixel halo (~2x the MACs), which costs
  more than writing and reading one intermediate map. So each depthwise conv is one launch of
  ``_dw_rows_kernel``, and ``_pw_gate_kernel`` runs the 1x1 on tensor cores (W1 @ s over
  [channels, pixels] tiles) with its bias and the gating multiply (the attention map never
  reaches memory).
- Every depthwise conv, forward or backward, goes through ONE core, ``_dw_row_block``: a block of
  output rows of one dilation phase over a [columns, channels] strip. Each loaded input row feeds
  every output row its kernel column reaches (ROWS + KH - 1 loads per kernel column instead of
  ROWS * KH), so a tap costs one FMA plus a fraction of a load and a bf16 -> fp32 conversion
  (the per-tap kernel it replaced spent ~6 instructions per FMA on sm_90 and ran 1.6-2x slower,
  probe21). The input gradient of a same-padded conv is the same conv with the kernel flipped
  (``FLIP``), so the backward reuses it; strides make NCHW and channels-last both work.
- Weight/bias gradients (``_dw_wgrad_kernel``): the same row blocks as work items; kernel
  columns outer, each program's items inner, the products of each kernel row accumulated
  elementwise and reduced over the strip once per column. Per-program partials
  [taps + 1, C] are summed by ``_dw_wgrad_reduce_kernel`` into the gradients in the parameters'
  dtype (no atomics on hot addresses, no torch epilogue).
- ``_pw_gate_bwd_kernel``: from the pre-1x1 map s, the input x and the output gradient g it
  writes dx = g * t (t = W1 s + b1, recomputed), dt = g * x and ds = W1^T dt; the 1x1 weight
  gradient dt^T s is one tensor-core matmul in torch.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..common import dot_precision, interpret_mode
from ..common.tuning import Launcher, cdiv, next_power_of_2

__all__ = ["dw_conv", "dw_conv_weight_grad", "dw_launch", "pw_gate", "pw_gate_backward", "pw_gate_launch",
           "pw_launch", "pw_weight", "wgrad_launches"]


@triton.jit
def _pixel_tile(tile, n_ptiles, H, W, BLOCK_P: tl.constexpr):
    """Tile index -> (batch, pixel rows, pixel cols, valid mask) of a BLOCK_P-pixel tile. The batch
    index is int64: batch offsets pass 2**31 elements on large inputs."""
    offs_p = (tile % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    return (tile // n_ptiles).to(tl.int64), offs_p // W, offs_p % W, offs_p < H * W


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
    b = (pid // per_b).to(tl.int64)   # batch offsets pass 2**31 elements on large inputs
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
def _pw_gate_kernel(
    S, W1, B1, X, OUT,
    ssb, ssc, ssh, ssw,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    C, H, W, HW, n_ptiles, n_coblocks,
    FLAT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, NUM_STAGES: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """out = x * (W1 @ s + b1), the attention map never in memory: a [BLOCK_CO channels, BLOCK_P
    pixels] tile per program, W1 [co, ci] @ s [ci, pixels] on tensor cores over a pipelined loop of
    input-channel blocks. Pixels are the MMA's N, so no tile holds every channel of its pixels
    (the [pixels, channels] tiles this replaced ran at 250-600 GB/s on 160-512 channels, probe76).
    The co blocks of a pixel tile are neighbouring programs: they share its s in L2. With FLAT
    the pixel p = h * W + w sits at p * (w stride) (NCHW and channels-last), which keeps NCHW
    rows' contiguity visible to the compiler."""
    pid = tl.program_id(0)
    tile = pid // n_coblocks
    offs_p = (tile % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    b = (tile // n_ptiles).to(tl.int64)   # batch offsets pass 2**31 elements on large inputs
    p_mask = offs_p < HW   # HW passed on its own: Triton sees its divisibility, so NCHW loads vectorize
    if FLAT:
        s_pix, x_pix, o_pix = offs_p * ssw, offs_p * sxw, offs_p * sow
    else:
        ph, pw = offs_p // W, offs_p % W
        s_pix, x_pix, o_pix = ph * ssh + pw * ssw, ph * sxh + pw * sxw, ph * soh + pw * sow
    offs_co = (pid % n_coblocks) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < C
    acc = tl.zeros([BLOCK_CO, BLOCK_P], dtype=tl.float32)
    for ci0 in tl.range(0, C, BLOCK_CI, num_stages=NUM_STAGES):
        offs_ci = ci0 + tl.arange(0, BLOCK_CI)
        ci_mask = offs_ci < C
        w1 = tl.load(W1 + offs_co[:, None] * C + offs_ci[None, :], mask=co_mask[:, None] & ci_mask[None, :],
                     other=0.0)
        s = tl.load(S + b * ssb + offs_ci[:, None] * ssc + s_pix[None, :], mask=ci_mask[:, None] & p_mask[None, :],
                    other=0.0)
        if UPCAST:  # fp32 operands: exact dot (and the interpreter's bf16 dot is wrong)
            s = s.to(tl.float32)
        acc += tl.dot(w1.to(s.dtype), s, input_precision=PRECISION)
    acc += tl.load(B1 + offs_co, mask=co_mask, other=0.0).to(tl.float32)[:, None]
    m = co_mask[:, None] & p_mask[None, :]
    u = tl.load(X + b * sxb + offs_co[:, None] * sxc + x_pix[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(OUT + b * sob + offs_co[:, None] * soc + o_pix[None, :], (u * acc).to(OUT.dtype.element_ty), mask=m)


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
            b = (rest // (DIL * n_rblocks)).to(tl.int64)
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

_dw_rows = Launcher(_dw_rows_kernel)
_pw_gate = Launcher(_pw_gate_kernel)
_pw_gate_bwd = Launcher(_pw_gate_bwd_kernel)
_dw_wgrad = Launcher(_dw_wgrad_kernel)
_dw_wgrad_reduce = Launcher(_dw_wgrad_reduce_kernel)


# Under the interpreter every Triton op costs the same whatever its block size, so the blocks
# are as large as the (small) test problem: few programs, fast tests.
def _interp_pixel_block(hw: int) -> int:
    return min(256, max(16, next_power_of_2(hw)))


def _rows_config(c: int, h: int, w: int, dilation: int, max_rows: int,
                 elems: int = 1024) -> tuple[int, int, int, int]:
    """(ROWS, BLOCK_W, BLOCK_C, num_warps) of the row-block kernels: up to ``max_rows`` rows of a
    dilation phase per program (the phase's rows split into equal blocks), column strips of
    ``elems`` elements (1024: 8 per thread at 4 warps; 512: 4 per thread, fewer registers, more
    programs) with as many channels as fit (from 64 channels up, 16 columns)."""
    per_phase = cdiv(h, dilation)
    rows = cdiv(per_phase, cdiv(per_phase, max_rows))
    if interpret_mode():
        return rows, min(32, next_power_of_2(w)), min(32, next_power_of_2(c)), 4
    block_w = min(next_power_of_2(w), 16 if c >= 64 else 32)
    block_c = min(max(16, next_power_of_2(c)), elems // block_w)
    return rows, block_w, block_c, 4


def _conv_elems(w: int, dilation: int) -> int:
    """Row-tile size of the conv (and of its flipped form, the input gradient). probe27 (H200,
    bf16, the lka bench and VAN layer shapes): 4 elements per thread beat 8 from 14 to 56 columns
    (C160 14x14 5x5: 19 against 34 us; C64 56x56 7x7 d3 at batch 128: 139 against 154) and lost
    on 7x7 maps (C512 7x7 d3: 65 against 37) and for the dilated 7x7 on 128x128 (106 against 92)."""
    return 512 if 8 < w and (dilation == 1 or w < 96) else 1024


def _small_kernel(kernel_size: tuple[int, int], dilation: int) -> bool:
    """At most 3 taps per axis, undilated (VAN's and BEVANet's MLP 3x3): convs bound by memory, not
    FMAs, which take their own tiles (``_small_kernel_config``, ``wgrad_launches``)."""
    return max(kernel_size) <= 3 and dilation == 1


def _small_kernel_config(c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(ROWS, BLOCK_W, BLOCK_C, num_warps) of a conv with at most 3 taps per axis (VAN's and
    BEVANet's MLP 3x3) on maps wider than 8 columns. Few taps make these convs bound by memory, not
    FMAs, so the tiles favour whole 128-byte channel runs over long row blocks: probe71 (H200,
    batch 128, bf16, channels-last, VAN's MLP maps) measured 8 rows of [8 cols, 64 channels] on 4
    warps at 0.159 against 0.225 ms (C256 56x56) and 0.313 against 0.457 (C512 56x56) for the
    12 rows of [16, 32] taken before, and [4, 128] on 2 warps at 0.090 against 0.096 (C512 28x28)
    and 0.172 against 0.192 (C1024 28x28); cuDNN's conv (bias not included) took 0.176, 0.343,
    0.095 and 0.180."""
    block_w, block_c, warps = (8, 64, 4) if w > 28 else (4, 128, 2)
    block_c = min(block_c, max(16, next_power_of_2(c)))
    block_w = min(next_power_of_2(w), (block_w * 64) // min(block_c, 64))   # few channels: wider strips
    return cdiv(h, cdiv(h, 8)), block_w, block_c, warps


def dw_launch(shape: tuple[int, ...], kernel_size: tuple[int, int], dilation: int, flip: bool, has_bias: bool,
              has_res: bool, strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, trailing scalars, meta-parameters) of one ``_dw_rows_kernel`` launch on a [B, C, H, W]
    map; ``strides``: those of x, of the residual (the output's when there is none) and of the
    output. Up to 12 rows per program: probe21 (H200, 7x7 dilation 3) measured 82 us with 12
    against 92 with 8 at B64 C64 56x56, and 41 against 60 at B64 C128 28x28. Kernels of at most
    3x3 taps on maps wider than 8 columns take ``_small_kernel_config``'s tiles."""
    bsz, c, h, w = shape
    if _small_kernel(kernel_size, dilation) and w > 8:
        rows, block_w, block_c, warps = _small_kernel_config(c, h, w)
    else:
        rows, block_w, block_c, warps = _rows_config(c, h, w, dilation, max_rows=12, elems=_conv_elems(w, dilation))
    n_rblocks = cdiv(cdiv(h, dilation), rows)
    grid = (bsz * dilation * n_rblocks, cdiv(w, block_w), cdiv(c, block_c))
    meta = dict(KH=kernel_size[0], KW=kernel_size[1], DIL=dilation, FLIP=flip, HAS_BIAS=has_bias, HAS_RES=has_res,
                ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)
    return grid, (*strides[0], *strides[1], *strides[2], c, h, w, n_rblocks), meta


def dw_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int,
            flip: bool = False, residual: torch.Tensor | None = None,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Same-padded depthwise conv. x [B, C, H, W] (any strides), weight [C, 1, kh, kw] odd, bias [C].

    ``flip`` convolves with the spatially flipped kernel (the input gradient of the conv);
    ``residual`` [B, C, H, W] is added to the result. ``out`` may be preallocated (any strides).
    """
    if not weight.is_contiguous():   # the kernels read it as [C, kh * kw]
        weight = weight.contiguous()
    if out is None:
        out = torch.empty_like(x)
    res = residual if residual is not None else out
    grid, scalars, meta = dw_launch(tuple(x.shape), tuple(weight.shape[-2:]), dilation, flip, bias is not None,
                                    residual is not None, (x.stride(), res.stride(), out.stride()))
    _dw_rows[grid](x, weight, bias if bias is not None else weight, res, out, *scalars, **meta)
    return out


def _pw_config(c: int, hw: int) -> tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_CI, BLOCK_CO, num_warps) of the backward 1x1 + gate kernel.
    Every input channel of a pixel is in one tile (the 1x1 contracts over them), so wide layers
    take fewer pixels per tile."""
    block_ci = max(16, next_power_of_2(c))
    block_co = min(64, block_ci)
    warps = 4 if block_ci <= 128 else 8
    block_p = _interp_pixel_block(hw) if interpret_mode() else max(16, min(64, 8192 // block_ci))
    return block_p, block_ci, block_co, warps


def pw_weight(conv1_weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 1x1 weight as a [C_out, C_in] matrix in the activations' dtype. Unlike the depthwise
    taps it is cast on the host: the kernels stream it through shared memory in blocks that the
    pipeliner multi-buffers, and fp32 blocks (autocast's parameters) overflowed shared memory at
    512 channels and cut occupancy at 256 (VAN-b2 OutOfResources, VAN-b0 2x slower; session 5)."""
    c = conv1_weight.shape[0]
    return conv1_weight.reshape(c, c).to(dtype).contiguous()


def pw_launch(shape: tuple[int, ...], dtype: torch.dtype,
              strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, trailing scalars, meta-parameters) of the backward 1x1 + gate (``strides`` of s, x,
    grad, dx, dt, ds) on a [B, C, H, W] map of ``dtype``."""
    bsz, c, h, w = shape
    block_p, block_ci, block_co, warps = _pw_config(c, h * w)
    upcast, precision = dot_precision(dtype)
    n_ptiles = cdiv(h * w, block_p)
    meta = dict(UPCAST=upcast, PRECISION=precision, BLOCK_P=block_p, BLOCK_CI=block_ci, BLOCK_CO=block_co,
                num_warps=warps)
    return (bsz * n_ptiles,), (*(n for st in strides for n in st), c, h, w, n_ptiles), meta


def _pw_gate_config(c: int, hw: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_P, BLOCK_CI, BLOCK_CO, num_warps, num_stages) of the forward 1x1 + gate: 64-channel
    blocks, 128 pixels (64 on maps of at most 64 pixels, half of a 128 tile would be masked);
    the best or within 10% of it in a sweep of 13 tiles on both layouts and the bench's and VAN's
    shapes (probe76)."""
    block_c = min(64, max(16, next_power_of_2(c)))
    if interpret_mode():
        return _interp_pixel_block(hw), block_c, block_c, 4, 1
    return (64 if hw <= 64 else 128), block_c, block_c, 4, 2


def pw_gate_launch(shape: tuple[int, ...], dtype: torch.dtype,
                   strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, trailing scalars, meta-parameters) of the forward 1x1 + gate on a [B, C, H, W] map
    of ``dtype`` (``strides`` of s, x and out)."""
    bsz, c, h, w = shape
    block_p, block_ci, block_co, warps, stages = _pw_gate_config(c, h * w)
    upcast, precision = dot_precision(dtype)
    n_ptiles, n_coblocks = cdiv(h * w, block_p), cdiv(c, block_co)
    flat = all(st[2] == w * st[3] for st in strides)   # pixels flatten (NCHW, channels-last)
    meta = dict(FLAT=flat, UPCAST=upcast, PRECISION=precision, NUM_STAGES=stages, BLOCK_P=block_p,
                BLOCK_CI=block_ci, BLOCK_CO=block_co, num_warps=warps)
    scalars = (*(n for st in strides for n in st), c, h, w, h * w, n_ptiles, n_coblocks)
    return (bsz * n_ptiles * n_coblocks,), scalars, meta


def pw_gate(s: torch.Tensor, conv1_weight: torch.Tensor, conv1_bias: torch.Tensor, x: torch.Tensor,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """out = x * conv1x1(s). s, x, out: [B, C, H, W] (any strides)."""
    w1 = pw_weight(conv1_weight, x.dtype)
    if out is None:
        out = torch.empty_like(x)
    grid, scalars, meta = pw_gate_launch(tuple(x.shape), x.dtype, (s.stride(), x.stride(), out.stride()))
    _pw_gate[grid](s, w1, conv1_bias, x, out, *scalars, **meta)
    return out


def pw_gate_backward(s: torch.Tensor, conv1_weight: torch.Tensor, conv1_bias: torch.Tensor,
                     x: torch.Tensor, grad: torch.Tensor, dx: torch.Tensor | None = None,
                     dt: torch.Tensor | None = None, ds: torch.Tensor | None = None):
    """Backward of out = x * (W1 s + b1). Returns (dx = g*t, dt = g*x, ds = W1^T dt), [B, C, H, W] each.

    ``dt`` is allocated channels-last so ``dt^T s`` (the 1x1 weight gradient) is a plain matmul.
    """
    w1 = pw_weight(conv1_weight, x.dtype)
    dx = torch.empty_like(x) if dx is None else dx
    dt = torch.empty_like(x, memory_format=torch.channels_last) if dt is None else dt
    ds = torch.empty_like(x, memory_format=torch.channels_last) if ds is None else ds
    grid, scalars, meta = pw_launch(tuple(x.shape), x.dtype, (s.stride(), x.stride(), grad.stride(), dx.stride(),
                                                              dt.stride(), ds.stride()))
    _pw_gate_bwd[grid](s, w1, conv1_bias, x, grad, dx, dt, ds, *scalars, **meta)
    return dx, dt, ds


@functools.cache
def _sm_count(device_index: int | None) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _wgrad_splits(total: int, n_cblocks: int, item_pixels: int, device_index: int | None,
                  min_pixels: int = 0) -> tuple[int, int]:
    """(splits, items per split) of the weight gradient's ``total`` work items: ~4 programs per SM,
    at most ~512 pixels per split (a split re-reads its items once per kernel column, and they
    should stay in L1), but at least ``min_pixels`` (each split ends in one cross-thread reduction
    per tap, which the pixels amortize). Under the interpreter two splits exercise the reduction."""
    if interpret_mode():
        per_split = cdiv(total, min(total, 2))
        return cdiv(total, per_split), per_split
    nsplit = max(1, min(total, 4 * _sm_count(device_index) // n_cblocks))
    per_split = min(cdiv(total, nsplit), max(1, 512 // item_pixels))
    per_split = min(total, max(per_split, cdiv(min_pixels, item_pixels)))
    return cdiv(total, per_split), per_split


def wgrad_launches(shape: tuple[int, ...], kernel_size: tuple[int, int], dilation: int,
                   strides: tuple[tuple[int, ...], ...], device_index: int | None):
    """The two launches of a depthwise conv's weight and bias gradient on a [B, C, H, W] map
    (``strides`` of dy and x): (nsplit, per-split partials (grid, scalars, meta), reduction (grid,
    scalars, meta)); the partials are fp32 [nsplit, taps + 1, C].

    Maps of 28x28 pixels and more take items of up to 12 rows and >= 1024 pixels per split, smaller
    ones up to 8 rows and the default splits: probe25 (H200, VAN's layer shapes at batch 128)
    measured 7x7 dilation 3 at C64 56x56 294 against 399 us and at C64 28x28 86 against 147 us,
    5x5 at C32 56x56 95 against 111 us, while on 14x14 and 7x7 maps the same rule cost up to 2.6x
    (fewer, longer splits leave SMs idle there). Kernels of at most 3x3 taps on such maps up to 28
    columns (VAN's MLP 3x3 on 28x28) take up to 8 rows of 8 elements per thread and >= 512 pixels
    per split: in one process (probe73 --ab, batch 128, bf16) C512 28x28 took 0.184 against 0.242 ms
    and C1024 0.327 against 0.471; on 56x56 and 14x14 maps the rule stayed within 10% of the best
    tiles of the sweep."""
    bsz, c, h, w = shape
    kh, kw = kernel_size
    taps = kh * kw
    large = h * w >= 28 * 28
    if large and w <= 28 and _small_kernel(kernel_size, dilation):
        max_rows, elems, min_pixels = 8, 1024, 512
    else:
        # 4 elements per thread up to 28 columns (probe27: C512 7x7 map, 7x7 d3 kernel 68 against 186 us;
        # C320 14x14 88 against 143), 8 on wider maps (C64 56x56: 294 against 332)
        max_rows, elems, min_pixels = (12 if large else 8), (512 if w <= 28 else 1024), (1024 if large else 0)
    rows, block_w, block_c, warps = _rows_config(c, h, w, dilation, max_rows=max_rows, elems=elems)
    n_rblocks, n_strips = cdiv(cdiv(h, dilation), rows), cdiv(w, block_w)
    total = bsz * dilation * n_rblocks * n_strips
    n_cblocks = cdiv(c, block_c)
    nsplit, per_split = _wgrad_splits(total, n_cblocks, rows * block_w, device_index, min_pixels)
    partials = ((nsplit, n_cblocks), (*strides[0], *strides[1], c, h, w, n_rblocks, n_strips, total, per_split),
                dict(KH=kh, KW=kw, DIL=dilation, ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps))
    block_rc = min(64, max(16, next_power_of_2(c)))
    reduction = ((taps + 1, cdiv(c, block_rc)), (nsplit, c), dict(TAPS=taps, BLOCK_S=32, BLOCK_C=block_rc, num_warps=4))
    return nsplit, partials, reduction


def dw_conv_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel_size: tuple[int, int], dilation: int,
                        weight_dtype: torch.dtype = torch.float32,
                        bias_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of a same-padded depthwise conv's weight [C, 1, kh, kw] and bias [C], accumulated
    in fp32 and returned in ``weight_dtype`` / ``bias_dtype``.

    grad: dL/dy [B, C, H, W]; x: the conv's input. Per-split partials, then one reduction launch
    (``wgrad_launches``).
    """
    c = x.shape[1]
    kh, kw = kernel_size
    nsplit, (grid, scalars, meta), (rgrid, rscalars, rmeta) = wgrad_launches(
        tuple(x.shape), kernel_size, dilation, (grad.stride(), x.stride()), x.device.index)
    part = torch.empty(nsplit, kh * kw + 1, c, device=x.device, dtype=torch.float32)
    _dw_wgrad[grid](grad, x, part, *scalars, **meta)
    dw = torch.empty(c, 1, kh, kw, device=x.device, dtype=weight_dtype)
    db = torch.empty(c, device=x.device, dtype=bias_dtype)
    _dw_wgrad_reduce[rgrid](part, dw, db, *rscalars, **rmeta)
    return dw, db
