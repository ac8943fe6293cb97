"""Triton kernels for large kernel attention (LKA) and its separable family.

Design (by the arithmetic, per element of a [B, C, H, W] map):
- LKA's depthwise 5x5 and dilated 7x7 are 25 + 49 = 74 MACs on CUDA cores; fusing the chain into
  one kernel would recompute the 5x5 over the 7x7's 18-pixel halo (~2x the MACs), which costs
  more than writing and reading one intermediate map. So each depthwise conv is one launch of
  ``_dw_rows_kernel``, and ``_pw_kernel`` runs the 1x1 on tensor cores (W1 @ s over
  [channels, pixels] tiles) with its bias and the gating multiply (the attention map never
  reaches memory).
- Every depthwise conv, forward or backward, goes through ONE core, ``_dw_row_block``: a block of
  output rows of one dilation phase over a [columns, channels] strip. Each loaded input row feeds
  every output row its kernel column reaches (ROWS + KH - 1 loads per kernel column instead of
  ROWS * KH), so a tap costs one FMA plus a fraction of a load and a bf16 -> fp32 conversion
  (the per-tap kernel it replaced spent ~6 instructions per FMA on sm_90 and ran 1.6-2x slower,
  probe21). The input gradient of a same-padded conv is the same conv with the kernel flipped
  (``FLIP``), so the backward reuses it; strides make NCHW and channels-last both work.
- The one exception, where it measured faster (``_tile_shape``): undilated 5x5s on channels-last
  maps of whole 64- (forwards: or 32-) channel blocks run ``_dw_tiles_kernel``, a block of output
  pixels with a channel vector per pixel and every loop static, so each input pixel is loaded and
  converted once (the row-block core reloads it for each kernel column); for the dilated 7x7 it
  lost.
- Weight/bias gradients (``_dw_wgrad_kernel``): the same row blocks as work items; kernel
  columns outer, each program's items inner, the products of each kernel row accumulated
  elementwise and reduced over the strip once per column. Per-program partials
  [taps + 1, C] are summed by ``_dw_wgrad_reduce_kernel`` into the gradients in the parameters'
  dtype (no atomics on hot addresses, no torch epilogue). On channels-last maps the LKA's 5x5 and
  7x7 dilation 3 write the same partials from ``_dw_wgrad_tiles_kernel`` where it measured faster
  (``_wgrad_tile``): items are pixel blocks of one dilation phase, each dy pixel and each input
  pixel of the halo loaded once per item, one sum per tap and lane until the program ends.
- The gate's backward runs the same ``_pw_kernel``: from the pre-1x1 map s, the input x and the
  output gradient g, dx = g * t (t = W1 s + b1, recomputed) and dt = g * x; then ds = W1^T dt,
  from the tile when one block holds every channel (<= 64), else in a second launch (W1 read
  transposed). The 1x1 weight gradient dt^T s is one tensor-core matmul in torch.
- bf16 maps reach the depthwise kernels' fp32 FMAs through ``_to_f32``: two elements per 32-bit
  register, one shift or mask each (the compiler's conversion costs 1.5 instructions per element;
  probe78).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..common import dot_precision, interpret_mode
from ..common.tuning import Launcher, cdiv, next_power_of_2

__all__ = ["PW_GATE", "PW_GATE_BWD", "PW_GATE_BWD_DS", "PW_PLAIN", "dw_conv", "dw_conv_weight_grad", "dw_launch",
           "conv_launch", "dw_tile_launch", "pw_backward_fused", "pw_gate", "pw_gate_backward", "pw_launch", "pw_weight",
           "wgrad_launches", "wgrad_program", "wgrad_tile_launches"]


@triton.jit
def _to_f32(x, PACKED: tl.constexpr):
    """bf16 -> fp32. PACKED (bf16 on the GPU): two elements per 32-bit register, one shift or mask
    each, where the compiler's conversion spends a byte permute and a shift on the upper half."""
    if PACKED:
        return tl.inline_asm_elementwise("shl.b32 $0, $2, 16;\n\tand.b32 $1, $2, 0xffff0000;", "=r,=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=2)
    else:
        return x.to(tl.float32)


@triton.jit
def _dw_row_block(accs, x_base, sxh, sxw, w_ptr, offs_w, offs_c, c_mask, phase, m0, H, W,
                  KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr, PACKED: tl.constexpr,
                  ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """Depthwise conv of ROWS output rows ``phase + DIL * (m0 + r)`` (one dilation phase: their
    input rows are the same phase's) over a [BLOCK_W cols, BLOCK_C channels] strip, added to
    ``accs`` (a tuple of ROWS fp32 [W, C] tiles) and returned so (zero padding outside the map;
    ``x_base`` points at the batch item and channels). Each loaded input row serves every output
    row its column of taps reaches: ROWS + KH - 1 loads per kernel column instead of ROWS * KH,
    so the taps cost one FMA each plus a fraction of a load and a conversion."""
    HALF: tl.constexpr = (KH - 1) // 2
    PW: tl.constexpr = DIL * (KW - 1) // 2
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
            xv = _to_f32(tl.load(col + row * sxh, mask=m & (row >= 0) & (row < H), other=0.0), PACKED)
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
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, PACKED: tl.constexpr, EVEN_C: tl.constexpr,
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
    if EVEN_C:
        c_mask = tl.full([BLOCK_C], True, tl.int1)
    else:
        c_mask = offs_c < C
    m = (offs_w < W)[:, None] & c_mask[None, :]
    # The sums start from the residual, whose loads are then in flight during the taps; loaded in
    # the epilogue, their latency was exposed (probe79: that made the 5x5 input gradient
    # 1.4-1.6x slower than loading them first).
    accs = ()
    for r in tl.static_range(ROWS):
        if HAS_RES:
            row = phase + DIL * (m0 + r)
            accs = accs + (tl.load(R + b * srb + row * srh + offs_w[:, None] * srw + offs_c[None, :] * src,
                                   mask=m & (row < H), other=0.0).to(tl.float32),)
        else:
            accs = accs + (tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32),)
    accs = _dw_row_block(accs, X + b * sxb + offs_c[None, :] * sxc, sxh, sxw, Wt, offs_w, offs_c, c_mask,
                         phase, m0, H, W, KH, KW, DIL, FLIP, PACKED, ROWS, BLOCK_W, BLOCK_C)
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    for r in tl.static_range(ROWS):
        row = phase + DIL * (m0 + r)
        acc = accs[r]
        if HAS_BIAS:
            acc += bias
        mr = m & (row < H)
        tl.store(Y + b * syb + row * syh + offs_w[:, None] * syw + offs_c[None, :] * syc,
                 acc.to(Y.dtype.element_ty), mask=mr)


@triton.jit
def _dw_tiles_kernel(
    X, Wt, Bias, R, Y,
    sxb, srb, syb, C, H, W, n_th, n_tw,
    SXH: tl.constexpr, SXW: tl.constexpr, SRH: tl.constexpr, SRW: tl.constexpr,
    SYH: tl.constexpr, SYW: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    PACKED: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y = depthwise_conv(x) (+ bias) (+ r) on channels-last maps (channel stride 1), undilated:
    one program per (batch item, TH x TW block of output pixels) x block of BLOCK_C channels (whole
    blocks), a [BLOCK_C] vector per pixel. Every loop is static: each input pixel of the block's
    halo is loaded and converted once and FMA'd into every output it reaches, the taps sit in
    registers, and the spatial strides are constexprs, so a load's address is the block's base
    plus an immediate (probe79). The sums start from the residual, as in ``_dw_rows_kernel``."""
    pid = tl.program_id(0)
    per_b = n_th * n_tw
    b = (pid // per_b).to(tl.int64)
    h_base = ((pid % per_b) // n_tw) * TH
    w_base = ((pid % per_b) % n_tw) * TW
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    TAPS: tl.constexpr = KH * KW
    ws = ()
    for tap in tl.static_range(TAPS):
        ws = ws + (tl.load(Wt + offs_c * TAPS + (TAPS - 1 - tap if FLIP else tap)).to(tl.float32),)
    accs = ()
    for r in tl.static_range(TH):
        for c in tl.static_range(TW):
            if HAS_RES:
                accs = accs + (tl.load(R + b * srb + (h_base + r) * SRH + (w_base + c) * SRW + offs_c,
                                       mask=(h_base + r < H) & (w_base + c < W), other=0.0).to(tl.float32),)
            else:
                accs = accs + (tl.zeros([BLOCK_C], dtype=tl.float32),)
    h0 = h_base - (KH - 1) // 2   # input row and column of the halo's first pixel
    w0 = w_base - (KW - 1) // 2
    xb = X + b * sxb + h0 * SXH + w0 * SXW + offs_c
    for i in tl.static_range(TH + KH - 1):
        row_ok = (h0 + i >= 0) & (h0 + i < H)
        for j in tl.static_range(TW + KW - 1):
            xv = _to_f32(tl.load(xb + (i * SXH + j * SXW), mask=row_ok & (w0 + j >= 0) & (w0 + j < W), other=0.0),
                         PACKED)
            for kh in tl.static_range(KH):
                if i - kh >= 0 and i - kh < TH:
                    for kw in tl.static_range(KW):
                        if j - kw >= 0 and j - kw < TW:
                            # inline indices: a name assigned in a jit function would become a tensor
                            accs = (accs[:(i - kh) * TW + j - kw]
                                    + (accs[(i - kh) * TW + j - kw] + xv * ws[kh * KW + kw],)
                                    + accs[(i - kh) * TW + j - kw + 1:])
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c).to(tl.float32)
    for r in tl.static_range(TH):
        for c in tl.static_range(TW):
            acc = accs[r * TW + c]
            if HAS_BIAS:
                acc += bias
            tl.store(Y + b * syb + (h_base + r) * SYH + (w_base + c) * SYW + offs_c, acc.to(Y.dtype.element_ty),
                     mask=(h_base + r < H) & (w_base + c < W))


# what the 1x1 kernel writes (its MODE)
PW_GATE, PW_GATE_BWD, PW_PLAIN, PW_GATE_BWD_DS = 0, 1, 2, 3


@triton.jit
def _pixel_offsets(offs_p, W, sh, sw, FLAT: tl.constexpr):
    """Offsets of pixels p = h * W + w; with FLAT (h stride = W * w stride) one multiply that
    keeps NCHW rows' contiguity visible to the compiler."""
    if FLAT:
        return offs_p * sw
    return (offs_p // W) * sh + (offs_p % W) * sw


@triton.jit
def _pw_kernel(
    S, W1, B1, X, G, OUT, OUT2, OUT3,
    ssb, ssc, ssh, ssw,
    sxb, sxc, sxh, sxw,
    sgb, sgc, sgh, sgw,
    sob, soc, soh, sow,
    s2b, s2c, s2h, s2w,
    swo, swi, C, H, W, HW, n_ptiles, n_coblocks,
    MODE: tl.constexpr, FLAT: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    NUM_STAGES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """The LKA's 1x1 on tensor cores with its epilogue, the attention map never in memory:
    t = W1 @ s (+ b1) over a [BLOCK_CO channels, BLOCK_P pixels] tile per program, a pipelined
    loop over input-channel blocks (W1[o, i] at o * swo + i * swi, so W1^T is a stride swap). Then
    MODE PW_GATE: out = x * t; PW_GATE_BWD: out = g * t (dx) and out2 = g * x (dt); PW_PLAIN:
    out = t without bias (ds = W1^T dt); PW_GATE_BWD_DS (one block holds every channel, C <=
    BLOCK_CO): PW_GATE_BWD's and out3 = W1^T dt from the tile (dt as stored; out3 takes out2's
    strides). Pixels are the MMA's N, so wider maps hold no tile with every channel of its pixels
    (the [pixels, channels] tiles this replaced ran at 250-600 GB/s on 160-512 channels, probe76);
    the co blocks of a pixel tile are neighbouring programs and share its s in L2."""
    pid = tl.program_id(0)
    tile = pid // n_coblocks
    offs_p = (tile % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    b = (tile // n_ptiles).to(tl.int64)   # batch offsets pass 2**31 elements on large inputs
    p_mask = offs_p < HW   # HW passed on its own: Triton sees its divisibility, so NCHW loads vectorize
    offs_co = (pid % n_coblocks) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_mask = offs_co < C
    acc = tl.zeros([BLOCK_CO, BLOCK_P], dtype=tl.float32)
    for ci0 in tl.range(0, C, BLOCK_CI, num_stages=NUM_STAGES):
        offs_ci = ci0 + tl.arange(0, BLOCK_CI)
        ci_mask = offs_ci < C
        w1 = tl.load(W1 + offs_co[:, None] * swo + offs_ci[None, :] * swi, mask=co_mask[:, None] & ci_mask[None, :],
                     other=0.0)
        s = tl.load(S + b * ssb + offs_ci[:, None] * ssc + _pixel_offsets(offs_p, W, ssh, ssw, FLAT)[None, :],
                    mask=ci_mask[:, None] & p_mask[None, :], other=0.0)
        if UPCAST:  # fp32 operands: exact dot (and the interpreter's bf16 dot is wrong)
            s = s.to(tl.float32)
        acc += tl.dot(w1.to(s.dtype), s, input_precision=PRECISION)
    m = co_mask[:, None] & p_mask[None, :]
    out = OUT + b * sob + offs_co[:, None] * soc + _pixel_offsets(offs_p, W, soh, sow, FLAT)[None, :]
    if MODE == 2:   # PW_PLAIN
        tl.store(out, acc.to(OUT.dtype.element_ty), mask=m)
    else:
        acc += tl.load(B1 + offs_co, mask=co_mask, other=0.0).to(tl.float32)[:, None]
        u = tl.load(X + b * sxb + offs_co[:, None] * sxc + _pixel_offsets(offs_p, W, sxh, sxw, FLAT)[None, :], mask=m,
                    other=0.0).to(tl.float32)
        if MODE == 0:   # PW_GATE
            tl.store(out, (u * acc).to(OUT.dtype.element_ty), mask=m)
        else:
            g = tl.load(G + b * sgb + offs_co[:, None] * sgc + _pixel_offsets(offs_p, W, sgh, sgw, FLAT)[None, :], mask=m,
                        other=0.0).to(tl.float32)
            tl.store(out, (g * acc).to(OUT.dtype.element_ty), mask=m)
            offs2 = b * s2b + offs_co[:, None] * s2c + _pixel_offsets(offs_p, W, s2h, s2w, FLAT)[None, :]
            dt = (g * u).to(OUT2.dtype.element_ty)
            tl.store(OUT2 + offs2, dt, mask=m)
            if MODE == 3:   # PW_GATE_BWD_DS: W1^T (rows: input channels, the tile's channels too)
                w1t = tl.load(W1 + offs_co[None, :] * swo + offs_co[:, None] * swi,
                              mask=co_mask[:, None] & co_mask[None, :], other=0.0)
                if UPCAST:
                    dt = dt.to(tl.float32)
                ds = tl.dot(w1t.to(dt.dtype), dt, input_precision=PRECISION)
                tl.store(OUT3 + offs2, ds.to(OUT3.dtype.element_ty), mask=m)


@triton.jit
def _dw_wgrad_kernel(
    DY, X, PART,
    sgb, sgc, sgh, sgw,
    sxb, sxc, sxh, sxw,
    C, H, W, n_rblocks, n_strips, total, per_split,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, PACKED: tl.constexpr,
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
                dys = dys + (_to_f32(tl.load(g_col + row * sgh, mask=mg & (row < H), other=0.0), PACKED),)
            if kw == 0:
                for r in tl.static_range(ROWS):
                    bias += dys[r]
            for j in tl.static_range(ROWS + KH - 1):
                row = phase + DIL * (m0 + j - HALF)
                xv = _to_f32(tl.load(x_col + row * sxh, mask=mx & (row >= 0) & (row < H), other=0.0), PACKED)
                for kh in tl.static_range(KH):
                    if j - kh >= 0 and j - kh < ROWS:
                        prods = prods[:kh] + (prods[kh] + dys[j - kh] * xv,) + prods[kh + 1:]
        for kh in tl.static_range(KH):
            tl.store(out + (kh * KW + kw) * C + offs_c, tl.sum(prods[kh], axis=0), mask=c_mask)
    tl.store(out + (KH * KW) * C + offs_c, tl.sum(bias, axis=0), mask=c_mask)


@triton.jit
def _wgrad_tile_item(accs, bias, gb, xb, c_mask, h_base, w_base, h0, w0, H, W,
                     SGH: tl.constexpr, SGW: tl.constexpr, SXH: tl.constexpr, SXW: tl.constexpr,
                     KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """One item of ``_dw_wgrad_tiles_kernel``: its products added to ``accs`` (one [BLOCK_C] sum
    per tap) and ``bias``, returned so. ``gb`` / ``xb`` point at the item's first dy pixel and its
    halo's first input pixel (row and column ``h0``, ``w0``); pixels outside the map read as zero.
    (Items inside the map run with the same masks: an unmasked path for them issued fewer
    instructions but raised the registers and lost 0.81-0.85x, probe84.)"""
    dys = ()
    for r in tl.static_range(TH):
        for c in tl.static_range(TW):
            dy = tl.load(gb + (DIL * r * SGH + DIL * c * SGW),
                         mask=c_mask & (h_base + DIL * r < H) & (w_base + DIL * c < W), other=0.0).to(tl.float32)
            bias += dy
            dys = dys + (dy,)
    for i in tl.static_range(TH + KH - 1):
        row_ok = c_mask & (h0 + DIL * i >= 0) & (h0 + DIL * i < H)
        for j in tl.static_range(TW + KW - 1):
            xv = tl.load(xb + (DIL * i * SXH + DIL * j * SXW), mask=row_ok & (w0 + DIL * j >= 0) & (w0 + DIL * j < W),
                         other=0.0).to(tl.float32)
            for kh in tl.static_range(KH):
                if i - kh >= 0 and i - kh < TH:
                    for kw in tl.static_range(KW):
                        if j - kw >= 0 and j - kw < TW:
                            accs = (accs[:kh * KW + kw] + (accs[kh * KW + kw] + dys[(i - kh) * TW + j - kw] * xv,)
                                    + accs[kh * KW + kw + 1:])
    return accs, bias


@triton.jit
def _dw_wgrad_tiles_kernel(
    DY, X, PART,
    sgb, sxb, C, H, W, n_th, n_tw, total, per_split,
    SGH: tl.constexpr, SGW: tl.constexpr, SXH: tl.constexpr, SXW: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """``_dw_wgrad_kernel``'s partials (same layout) on channels-last maps, from pixel tiles: an item
    is a TH x TW block of output pixels of one dilation phase (both axes) of one batch item, a
    [BLOCK_C] channel vector per pixel (one channel per lane). Every loop but the items' is static:
    each dy pixel is loaded once per item and each input pixel of the block's halo once, then
    multiplied with every dy pixel it meets, into one [BLOCK_C] sum per tap that no lane shares, so
    the taps need no cross-lane reduction until the program ends (the row-block kernel reloads the
    dy rows for every kernel column and reduces per column)."""
    split = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    TAPS: tl.constexpr = KH * KW
    first = split * per_split
    last = tl.minimum(first + per_split, total)
    accs = (tl.zeros([BLOCK_C], dtype=tl.float32),) * TAPS
    bias = tl.zeros([BLOCK_C], dtype=tl.float32)
    per_phase = n_th * n_tw
    for item in range(first, last):
        b = (item // (DIL * DIL * per_phase)).to(tl.int64)
        rest = item % (DIL * DIL * per_phase)
        ph = rest // (DIL * per_phase)
        pw = (rest // per_phase) % DIL
        h_base = ph + DIL * TH * ((rest % per_phase) // n_tw)   # the block's first output row and column
        w_base = pw + DIL * TW * ((rest % per_phase) % n_tw)
        h0 = h_base - DIL * ((KH - 1) // 2)   # input row and column of the halo's first pixel
        w0 = w_base - DIL * ((KW - 1) // 2)
        accs, bias = _wgrad_tile_item(accs, bias, DY + b * sgb + h_base * SGH + w_base * SGW + offs_c,
                                      X + b * sxb + h0 * SXH + w0 * SXW + offs_c, c_mask, h_base, w_base, h0, w0,
                                      H, W, SGH, SGW, SXH, SXW, KH, KW, DIL, TH, TW)
    out = PART + split * ((TAPS + 1) * C)
    for tap in tl.static_range(TAPS):
        tl.store(out + tap * C + offs_c, accs[tap], mask=c_mask)
    tl.store(out + TAPS * C + offs_c, bias, mask=c_mask)


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
_dw_tiles = Launcher(_dw_tiles_kernel)
_pw = Launcher(_pw_kernel)
_dw_wgrad = Launcher(_dw_wgrad_kernel)
_dw_wgrad_reduce = Launcher(_dw_wgrad_reduce_kernel)
_dw_wgrad_tiles = Launcher(_dw_wgrad_tiles_kernel)


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


def _packed(dtype: torch.dtype) -> bool:
    """Whether bf16 maps may be converted to fp32 two elements at a time (``_to_f32``: inline PTX,
    which the interpreter cannot run)."""
    return dtype == torch.bfloat16 and not interpret_mode()


def _conv_variant(dtype: torch.dtype, c: int, w: int, block_c: int, taps: int) -> tuple[bool, bool]:
    """(PACKED, EVEN_C) of a row-block conv. probe78 (H200, bf16, channels-last, the bench's and
    VAN's LKA convs, forward and input gradient, against the kernel without either): packed
    conversion alone was never slower on maps wider than 14 columns and up to 1.14x faster (7x7
    dilation 3, input gradient, C64 28x28), while on 14x14 and 7x7 maps the input gradient lost up
    to 10% (with the rule's unmasked blocks, C160 14x14 7x7 dilation 3: 33.7 -> 36.5 us).
    Unmasked channel blocks on top helped the 49-tap kernels (B128 C64 56x56 forward 135.6 ->
    130.2 us) but cost the 5x5 forward 1.35-1.4x on 56x56 and 128x128 maps (44.2 -> 59.8 us at
    B64 C64 56x56; a register cliff, not the instructions it saves)."""
    packed = _packed(dtype) and w > 14
    return packed, packed and taps >= 49 and c % block_c == 0


def _narrow_strips(c: int, w: int) -> bool:
    """Whether a conv takes [8 columns, 32 channels] strips on 2 warps instead of ``_rows_config``'s
    16- or 32-column ones: maps of 33-95 columns that 8 divides and 16 does not (56: 16-column
    strips cover 64, so 1/8 of the FMAs ran on masked lanes). probe81 (H200, bf16, channels-last,
    against the rule): the 7x7 dilation 3 forward 1.13-1.14x (B64 C64 56x56 69.3 -> 61.6 us, B128
    C64 56x56 130.0 -> 114.4, B128 C32 56x56 68.3 -> 60.0), its input gradient 1.10-1.18x, the
    5x5 on C32 56x56 1.13x / 1.20x; on 28x28 maps (both 12.5% masked) within 2% of the rule, on
    128x128 0.85x."""
    return c >= 32 and 32 < w < 96 and w % 16 == 8


def dw_launch(shape: tuple[int, ...], dtype: torch.dtype, kernel_size: tuple[int, int], dilation: int, flip: bool,
              has_bias: bool, has_res: bool,
              strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, trailing scalars, meta-parameters) of one ``_dw_rows_kernel`` launch on a [B, C, H, W]
    map of ``dtype``; ``strides``: those of x, of the residual (the output's when there is none) and
    of the output. Up to 12 rows per program: probe21 (H200, 7x7 dilation 3) measured 82 us with
    12 against 92 with 8 at B64 C64 56x56, and 41 against 60 at B64 C128 28x28. Kernels of at most
    3x3 taps on maps wider than 8 columns take ``_small_kernel_config``'s tiles, 56-column maps and
    the like narrower strips (``_narrow_strips``)."""
    bsz, c, h, w = shape
    if _small_kernel(kernel_size, dilation) and w > 8:
        rows, block_w, block_c, warps = _small_kernel_config(c, h, w)
    else:
        rows, block_w, block_c, warps = _rows_config(c, h, w, dilation, max_rows=12, elems=_conv_elems(w, dilation))
        if _narrow_strips(c, w) and not interpret_mode():
            block_w, block_c, warps = 8, 32, 2
    n_rblocks = cdiv(cdiv(h, dilation), rows)
    grid = (bsz * dilation * n_rblocks, cdiv(w, block_w), cdiv(c, block_c))
    meta = dict(KH=kernel_size[0], KW=kernel_size[1], DIL=dilation, FLIP=flip, HAS_BIAS=has_bias, HAS_RES=has_res,
                ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)
    meta["PACKED"], meta["EVEN_C"] = _conv_variant(dtype, c, w, block_c, kernel_size[0] * kernel_size[1])
    return grid, (*strides[0], *strides[1], *strides[2], c, h, w, n_rblocks), meta


def _tile_shape(kernel_size: tuple[int, int], dilation: int, c: int, w: int, flip: bool) -> tuple[int, int] | None:
    """(TH, TW) of ``_dw_tiles_kernel`` where it beats the row-block conv, else None. probe79 (H200,
    bf16, channels-last, 64-channel blocks on one warp, against the row-block rule): the 5x5
    forward in 4x6 blocks 1.25x (B64 C64 56x56, 44.2 -> 35.4 us), 1.31x (B128 C64 56x56), 1.16x
    (B16 C64 128x128); its input gradient (flipped, with the residual) in 4x4 blocks 1.39-1.59x on
    all four (28x28: 38.8 -> 27.1 us). On 28x28 maps probe79's tile form lost the forward (0.78x),
    but ops' kernel in 4x6 blocks won it 1.31-1.36x (probe81: B64 C128 26.8 -> 20.5 us, B128 C64
    26.9 -> 19.8, B128 C128 46.2 -> 34.7; 4x7, 2x7, 3x7 and 2x14 blocks 1.05-1.2x there and
    0.78-0.82x on 56x56). On VAN's late stages 7-column blocks win both directions (probe81 small,
    batch 128): 3x7 on 14x14 maps (C320: forward 32.4 -> 29.2 us, input gradient 37.5 -> 32.7),
    4x7 on 7x7 maps (C512: 19.1 -> 13.9, 23.6 -> 16.3; C256 1.31x / 1.26x). The dilated 7x7 lost
    in every form tried (0.6-1.0x); other widths under 28 columns were not measured and keep the
    row blocks. Channels that fill 32- but not 64-channel blocks (``_tile_block_c``, one channel a
    lane) take 4x8 blocks for forwards from 28 columns (probe82: B128 C32 56x56 40.1 -> 38.0 us,
    B1 C32 128x256 1.09x, B64 C96 56x56 1.04x, B128 C160 28x28 1.06x); their input gradients lost
    (0.71-0.96x), as did 14x14 maps but for 1.04x in 3x7 blocks."""
    if tuple(kernel_size) != (5, 5) or dilation != 1 or c % 32:
        return None
    if c % 64:
        return (4, 8) if not flip and w >= 28 else None
    if w in (7, 14):
        return (4, 7) if w == 7 else (3, 7)
    if flip:
        return (4, 4) if w > 14 else None
    return (4, 6) if w >= 28 else None


def _tile_block_c(c: int) -> int:
    """Channels of a tile program (one warp): 64 (two per lane, converted in pairs when PACKED)
    where they divide C, else 32 (one per lane: VAN-b0's 32- and 160-channel stages)."""
    return 64 if c % 64 == 0 else 32


def dw_tile_launch(shape: tuple[int, ...], dtype: torch.dtype, kernel_size: tuple[int, int], dilation: int,
                   flip: bool, has_bias: bool, has_res: bool,
                   strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict] | None:
    """(grid, trailing scalars, meta-parameters) of a ``_dw_tiles_kernel`` launch (arguments as
    ``dw_launch``'s, the same leading tensors), or None where the row-block conv runs: another
    kernel, dilation or channel count (``_tile_shape``), or a map whose channels are not unit-stride."""
    bsz, c, h, w = shape
    tile = _tile_shape(kernel_size, dilation, c, w, flip)
    if tile is None or any(s[1] != 1 for s in strides):
        return None
    (sx, sr, sy), (th, tw), block_c = strides, tile, _tile_block_c(c)
    n_th, n_tw = cdiv(h, th), cdiv(w, tw)
    meta = dict(SXH=sx[2], SXW=sx[3], SRH=sr[2], SRW=sr[3], SYH=sy[2], SYW=sy[3], KH=kernel_size[0],
                KW=kernel_size[1], FLIP=flip, HAS_BIAS=has_bias, HAS_RES=has_res,
                PACKED=_packed(dtype) and block_c == 64, TH=th, TW=tw, BLOCK_C=block_c, num_warps=1)
    return (bsz * n_th * n_tw, c // block_c), (sx[0], sr[0], sy[0], c, h, w, n_th, n_tw), meta


def conv_launch(*args) -> tuple[Launcher, tuple[tuple[int, ...], tuple[int, ...], dict]]:
    """(launcher, (grid, trailing scalars, meta-parameters)) of a depthwise conv, ``dw_launch``'s
    arguments: the tile kernel where ``_tile_shape`` takes the conv, else the row blocks (both
    launchers take the same leading tensors)."""
    tiles = dw_tile_launch(*args)
    return (_dw_rows, dw_launch(*args)) if tiles is None else (_dw_tiles, tiles)


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
    launcher, (grid, scalars, meta) = conv_launch(tuple(x.shape), x.dtype, tuple(weight.shape[-2:]), dilation, flip,
                                                  bias is not None, residual is not None,
                                                  (x.stride(), res.stride(), out.stride()))
    launcher[grid](x, weight, bias if bias is not None else weight, res, out, *scalars, **meta)
    return out


def pw_backward_fused(c: int) -> bool:
    """Whether the gate's backward is one launch (PW_GATE_BWD_DS): maps of at most 64 channels,
    one block of each. probe77 (H200, bf16, channels-last) measured it against two launches at
    43 / 58 us (B64 C64 56x56), 55 / 71 (B16 C64 128x128), 48 / 53 (B128 C32 56x56), 26 / 36 (B128
    C64 28x28) and 81 / 103 (B128 C64 56x56): it saves a launch and the re-read of dt."""
    return c <= 64


def _pw_config(c: int, hw: int, mode: int = PW_GATE) -> tuple[int, int, int, int, int]:
    """(BLOCK_P, BLOCK_CI, BLOCK_CO, num_warps, num_stages) of the 1x1 kernel: 64-channel blocks,
    128 pixels (64 on maps of at most 64 pixels, half of a 128 tile would be masked); the best or
    within 10% of it in a sweep of 13 tiles on both layouts and the bench's and VAN's shapes
    (probe76). The one-launch backward takes 64 pixels (probe77: 43 against 46 us at 128 pixels
    on B64 C64 56x56, the best of three tiles on each shape)."""
    block_c = min(64, max(16, next_power_of_2(c)))
    if interpret_mode():
        return _interp_pixel_block(hw), block_c, block_c, 4, 1
    if mode == PW_GATE_BWD_DS:
        return 64, block_c, block_c, 4, 1
    return (64 if hw <= 64 else 128), block_c, block_c, 4, 2


def pw_weight(conv1_weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 1x1 weight as a [C_out, C_in] matrix in the activations' dtype. Unlike the depthwise
    taps it is cast on the host: the kernels stream it through shared memory in blocks that the
    pipeliner multi-buffers, and fp32 blocks (autocast's parameters) overflowed shared memory at
    512 channels and cut occupancy at 256 (VAN-b2 OutOfResources, VAN-b0 2x slower; session 5)."""
    c = conv1_weight.shape[0]
    return conv1_weight.reshape(c, c).to(dtype).contiguous()


_NO_STRIDES = (0, 0, 0, 0)


def pw_launch(shape: tuple[int, ...], dtype: torch.dtype, mode: int,
              strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, trailing scalars, meta-parameters) of a 1x1 launch (``_pw_kernel``) on a [B, C, H, W]
    map of ``dtype``; ``strides`` of the tensors it reads and writes: PW_GATE (s, x, out),
    PW_GATE_BWD and PW_GATE_BWD_DS (s, x, g, dx, dt; ds takes dt's), PW_PLAIN (dt, ds; the weight
    read transposed)."""
    bsz, c, h, w = shape
    if mode == PW_GATE_BWD_DS and not pw_backward_fused(c):
        raise ValueError(f"the one-launch gate backward takes at most 64 channels, got {c}")
    block_p, block_ci, block_co, warps, stages = _pw_config(c, h * w, mode)
    upcast, precision = dot_precision(dtype)
    n_ptiles, n_coblocks = cdiv(h * w, block_p), cdiv(c, block_co)
    flat = all(st[2] == w * st[3] for st in strides)   # pixels flatten (NCHW, channels-last)
    if mode == PW_GATE:
        s_, x_, o_ = strides
        full = (s_, x_, _NO_STRIDES, o_, _NO_STRIDES)
    elif mode in (PW_GATE_BWD, PW_GATE_BWD_DS):
        full = strides
    else:
        s_, o_ = strides
        full = (s_, _NO_STRIDES, _NO_STRIDES, o_, _NO_STRIDES)
    w_strides = (1, c) if mode == PW_PLAIN else (c, 1)
    meta = dict(MODE=mode, FLAT=flat, UPCAST=upcast, PRECISION=precision, NUM_STAGES=stages, BLOCK_P=block_p,
                BLOCK_CI=block_ci, BLOCK_CO=block_co, num_warps=warps)
    scalars = (*(n for st in full for n in st), *w_strides, c, h, w, h * w, n_ptiles, n_coblocks)
    return (bsz * n_ptiles * n_coblocks,), scalars, meta


def pw_gate(s: torch.Tensor, conv1_weight: torch.Tensor, conv1_bias: torch.Tensor, x: torch.Tensor,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """out = x * conv1x1(s). s, x, out: [B, C, H, W] (any strides)."""
    w1 = pw_weight(conv1_weight, x.dtype)
    if out is None:
        out = torch.empty_like(x)
    grid, scalars, meta = pw_launch(tuple(x.shape), x.dtype, PW_GATE, (s.stride(), x.stride(), out.stride()))
    _pw[grid](s, w1, conv1_bias, x, s, out, out, out, *scalars, **meta)
    return out


def pw_gate_backward(s: torch.Tensor, conv1_weight: torch.Tensor, conv1_bias: torch.Tensor,
                     x: torch.Tensor, grad: torch.Tensor, dx: torch.Tensor | None = None,
                     dt: torch.Tensor | None = None, ds: torch.Tensor | None = None):
    """Backward of out = x * (W1 s + b1). Returns (dx = g*t, dt = g*x, ds = W1^T dt), [B, C, H, W] each:
    one launch of the 1x1 kernel on maps of at most 64 channels (``pw_backward_fused``) when dt and
    ds share strides, else two (ds needs every output channel of dt, which no tile holds then).

    ``dt`` is allocated channels-last so ``dt^T s`` (the 1x1 weight gradient) is a plain matmul.
    """
    w1 = pw_weight(conv1_weight, x.dtype)
    dx = torch.empty_like(x) if dx is None else dx
    dt = torch.empty_like(x, memory_format=torch.channels_last) if dt is None else dt
    ds = torch.empty_like(x, memory_format=torch.channels_last) if ds is None else ds
    shape = tuple(x.shape)
    fused = pw_backward_fused(shape[1]) and dt.stride() == ds.stride()
    grid, scalars, meta = pw_launch(shape, x.dtype, PW_GATE_BWD_DS if fused else PW_GATE_BWD,
                                    (s.stride(), x.stride(), grad.stride(), dx.stride(), dt.stride()))
    _pw[grid](s, w1, conv1_bias, x, grad, dx, dt, ds, *scalars, **meta)
    if not fused:
        grid, scalars, meta = pw_launch(shape, x.dtype, PW_PLAIN, (dt.stride(), ds.stride()))
        _pw[grid](dt, w1, conv1_bias, dt, dt, ds, ds, ds, *scalars, **meta)
    return dx, dt, ds


@functools.cache
def _sm_count(device_index: int | None) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _wgrad_splits(total: int, n_cblocks: int, item_pixels: int, device_index: int | None,
                  min_pixels: int = 0, per_sm: int = 4, max_pixels: int | None = 512) -> tuple[int, int]:
    """(splits, items per split) of the weight gradient's ``total`` work items: ~``per_sm``
    programs per SM, at most ~``max_pixels`` pixels per split (the row blocks re-read a split's
    items once per kernel column, and they should stay in L1; None: no cap), but at least
    ``min_pixels`` (each split ends in one cross-thread reduction per tap, which the pixels
    amortize). Under the interpreter two splits exercise the reduction."""
    if interpret_mode():
        per_split = cdiv(total, min(total, 2))
        return cdiv(total, per_split), per_split
    nsplit = max(1, min(total, per_sm * _sm_count(device_index) // n_cblocks))
    per_split = cdiv(total, nsplit)
    if max_pixels is not None:
        per_split = min(per_split, max(1, max_pixels // item_pixels))
    per_split = min(total, max(per_split, cdiv(min_pixels, item_pixels)))
    return cdiv(total, per_split), per_split


def _wgrad_reduction(taps: int, c: int, nsplit: int) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, scalars, meta) of ``_dw_wgrad_reduce_kernel`` over ``nsplit`` partials of ``taps``
    taps and C channels (both weight-gradient kernels write the same partials)."""
    block_c = min(64, max(16, next_power_of_2(c)))
    return (taps + 1, cdiv(c, block_c)), (nsplit, c), dict(TAPS=taps, BLOCK_S=32, BLOCK_C=block_c, num_warps=4)


def wgrad_launches(shape: tuple[int, ...], dtype: torch.dtype, kernel_size: tuple[int, int], dilation: int,
                   strides: tuple[tuple[int, ...], ...], device_index: int | None):
    """The two launches of a depthwise conv's weight and bias gradient on a [B, C, H, W] map of
    ``dtype`` (``strides`` of dy and x): (nsplit, per-split partials (grid, scalars, meta), reduction (grid,
    scalars, meta)); the partials are fp32 [nsplit, taps + 1, C].

    Maps of 28x28 pixels and more take items of up to 12 rows and >= 1024 pixels per split, smaller
    ones up to 8 rows and the default splits: probe25 (H200, VAN's layer shapes at batch 128)
    measured 7x7 dilation 3 at C64 56x56 294 against 399 us and at C64 28x28 86 against 147 us,
    5x5 at C32 56x56 95 against 111 us, while on 14x14 and 7x7 maps the same rule cost up to 2.6x
    (fewer, longer splits leave SMs idle there). Kernels of at most 3x3 taps on such maps up to 28
    columns (VAN's MLP 3x3 on 28x28) take up to 8 rows of 8 elements per thread and >= 512 pixels
    per split: in one process (probe73 --ab, batch 128, bf16) C512 28x28 took 0.184 against 0.242 ms
    and C1024 0.327 against 0.471; on 56x56 and 14x14 maps the rule stayed within 10% of the best
    tiles of the sweep. bf16 loads are converted in pairs on maps up to 64 columns (probe78: 1.00-
    1.05x on VAN's LKA gradients, but 0.84x on the 7x7 dilation 3 over 128x128)."""
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
                dict(KH=kh, KW=kw, DIL=dilation, PACKED=_packed(dtype) and w <= 64, ROWS=rows, BLOCK_W=block_w,
                     BLOCK_C=block_c, num_warps=warps))
    return nsplit, partials, _wgrad_reduction(taps, c, nsplit)


def _wgrad_tile(kernel_size: tuple[int, int], dilation: int, c: int, w: int) -> tuple[int, int, int, int] | None:
    """(TH, TW, num_warps, programs per SM) of ``_dw_wgrad_tiles_kernel`` where it beats the
    row-block weight gradient, else None. probe83 (H200, bf16, channels-last, against the row
    blocks): 4x4 blocks with one channel per lane, 8 programs per SM, ran the 7x7 dilation 3 1.38x
    (B64 C64 56x56, 149.6 -> 108.2 us), 1.50x (B128 C64 56x56), 1.55x (B128 C32 56x56, one warp)
    and 1.12x (B128 C128 28x28), the 5x5 1.18x, 1.48x, 1.48x (C128 28x28) and 1.23x (C320 14x14);
    one-warp 5x5 programs 16 per SM (C32 56x56: 93.3 -> 81.8 us, 91.0 at 8). Off those maps the
    7x7 dilation 3 took 4 programs per SM: B16 C64 128x128 170.3 -> 121.2 us (130.4 at 8), B128
    C256 7x7 58.3 -> 28.9 (33.6 at 8), C512 7x7 69.0 -> 45.3; the 5x5 on 128x128 4x4 blocks
    (119.8 -> 92.6 us), on 7x7 maps 2x8 (C256 33.4 -> 23.9, 27.1 in 4x4; C512 45.9 -> 26.2, as
    4x4). The dilated 7x7 on 14x14 lost (0.97-1.00x); maps of 8-13 columns and other kernels keep
    the row blocks."""
    if (tuple(kernel_size), dilation) not in (((5, 5), 1), ((7, 7), 3)):
        return None
    if w != 7 and w < (14 if dilation == 1 else 28):
        return None
    warps = 1 if c < 64 else 2
    if dilation == 1:
        th, tw = (2, 8) if w == 7 else (4, 4)
        return th, tw, warps, 16 if warps == 1 else 8
    return 4, 4, warps, 4 if w > 56 or w == 7 else 8


def wgrad_tile_launches(shape: tuple[int, ...], dtype: torch.dtype, kernel_size: tuple[int, int], dilation: int,
                        strides: tuple[tuple[int, ...], ...], device_index: int | None):
    """``wgrad_launches``' three values for ``_dw_wgrad_tiles_kernel`` (the same partials and
    reduction), or None where the row-block kernel runs: ``_wgrad_tile`` declines, or the maps'
    channels are not unit-stride. A program holds 32 channels per warp, one per lane; the splits
    give ~``programs per SM`` programs of whole items."""
    bsz, c, h, w = shape
    tile = _wgrad_tile(kernel_size, dilation, c, w)
    if tile is None or any(s[1] != 1 for s in strides):
        return None
    th, tw, warps, per_sm = tile
    kh, kw = kernel_size
    block_c = 32 * warps
    n_th, n_tw = cdiv(cdiv(h, dilation), th), cdiv(cdiv(w, dilation), tw)
    total, n_cblocks = bsz * dilation * dilation * n_th * n_tw, cdiv(c, block_c)
    nsplit, per_split = _wgrad_splits(total, n_cblocks, th * tw, device_index, per_sm=per_sm, max_pixels=None)
    (sg, sx) = strides
    partials = ((nsplit, n_cblocks), (sg[0], sx[0], c, h, w, n_th, n_tw, total, per_split),
                dict(SGH=sg[2], SGW=sg[3], SXH=sx[2], SXW=sx[3], KH=kh, KW=kw, DIL=dilation, TH=th, TW=tw,
                     BLOCK_C=block_c, num_warps=warps))
    return nsplit, partials, _wgrad_reduction(kh * kw, c, nsplit)


def wgrad_program(*args) -> tuple[Launcher, tuple]:
    """(partials' launcher, (nsplit, partials, reduction)) of a weight gradient, ``wgrad_launches``'
    arguments: the tile kernel where ``_wgrad_tile`` takes it, else the row blocks (both write the
    same partials for the same reduction)."""
    tiles = wgrad_tile_launches(*args)
    return (_dw_wgrad, wgrad_launches(*args)) if tiles is None else (_dw_wgrad_tiles, tiles)


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
    launcher, (nsplit, (grid, scalars, meta), (rgrid, rscalars, rmeta)) = wgrad_program(
        tuple(x.shape), x.dtype, kernel_size, dilation, (grad.stride(), x.stride()), x.device.index)
    part = torch.empty(nsplit, kh * kw + 1, c, device=x.device, dtype=torch.float32)
    launcher[grid](grad, x, part, *scalars, **meta)
    dw = torch.empty(c, 1, kh, kw, device=x.device, dtype=weight_dtype)
    db = torch.empty(c, device=x.device, dtype=bias_dtype)
    _dw_wgrad_reduce[rgrid](part, dw, db, *rscalars, **rmeta)
    return dw, db
