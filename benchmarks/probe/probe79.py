"""Probe (session 33): a depthwise conv whose spatial loops are all static, channels as the vector.

``_dw_row_block`` (ops' conv core) keeps a [columns, channels] strip per output row and walks the
kernel columns in a runtime loop, so every input element is loaded and converted to fp32 once
per kernel column (KW times, ~6.7 loads per output on the 5x5 with 12 rows), and its column
offsets are runtime values. Offline sm_90 SASS put its loop at ~1.9 instructions per FMA
(session 32). Here a program owns a TH x TW block of output pixels of one dilation phase (both
axes) and a [BLOCK_C] channel vector per pixel: every input pixel of the block's halo is loaded
once, converted once and FMA'd into each output it reaches, the weights sit in registers, and the
spatial strides are constexprs, so each load's address is the tile's base plus an immediate.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe79.py check    # interpreter or GPU, vs F.conv2d
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe79.py sass     # offline sm_90 registers / SASS
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe79.py tile|stream [WORKERS] [5x5|7x7] [fwd|dx]
                                                                       # GPU: the sweeps against ops' dw_conv
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe79.py cap      # GPU: the row-block 5x5 with EVEN_C, capped
"""
import itertools
import statistics
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ops.common import interpret_mode
from ops.common.tuning import cdiv
from ops.lka.kernels import _to_f32, dw_conv


@triton.jit
def _phase_program(n_rows, n_tw, C, Wt, DIL: tl.constexpr, TAPS: tl.constexpr, FLIP: tl.constexpr,
                   EVEN_C: tl.constexpr, BLOCK_C: tl.constexpr):
    """Both probe kernels' program: (batch item, row phase, column phase, row block, column
    block, channel offsets, channel mask, the taps as fp32 channel vectors, flipped for FLIP)."""
    pid = tl.program_id(0)
    per_b = DIL * DIL * n_rows * n_tw
    t = pid % per_b
    rest = t // (DIL * DIL)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if EVEN_C:
        c_mask = tl.full([BLOCK_C], True, tl.int1)
    else:
        c_mask = offs_c < C
    ws = ()
    for tap in tl.static_range(TAPS):
        ws = ws + (tl.load(Wt + offs_c * TAPS + (TAPS - 1 - tap if FLIP else tap), mask=c_mask, other=0.0)
                   .to(tl.float32),)
    return (pid // per_b).to(tl.int64), t % DIL, (t // DIL) % DIL, rest // n_tw, rest % n_tw, offs_c, c_mask, ws


@triton.jit
def _dw_tile_kernel(
    X, Wt, Bias, R, Y,
    sxb, srb, syb, C, H, W, n_th, n_tw,
    SXH: tl.constexpr, SXW: tl.constexpr, SRH: tl.constexpr, SRW: tl.constexpr,
    SYH: tl.constexpr, SYW: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, PACKED: tl.constexpr, EVEN_C: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Channels-last depthwise conv: one program per (batch item, row phase, column phase, TH x TW
    block of that phase's pixels) x channel block."""
    b, ph, pw, th, tw, offs_c, c_mask, ws = _phase_program(n_th, n_tw, C, Wt, DIL, KH * KW, FLIP, EVEN_C, BLOCK_C)
    HALF_H: tl.constexpr = (KH - 1) // 2
    HALF_W: tl.constexpr = (KW - 1) // 2
    h0 = ph + DIL * (th * TH - HALF_H)   # input row of i = 0
    w0 = pw + DIL * (tw * TW - HALF_W)
    xb = X + b * sxb + h0 * SXH + w0 * SXW + offs_c
    accs = (tl.zeros([BLOCK_C], dtype=tl.float32),) * (TH * TW)
    if HAS_RES:   # the residual starts the sums: its loads are in flight while the taps run
        for r in tl.static_range(TH):
            for c in tl.static_range(TW):
                accs = (accs[:r * TW + c]
                        + (tl.load(R + b * srb + (ph + DIL * (th * TH + r)) * SRH + (pw + DIL * (tw * TW + c)) * SRW
                                   + offs_c, mask=c_mask & (ph + DIL * (th * TH + r) < H) & (pw + DIL * (tw * TW + c) < W),
                                   other=0.0).to(tl.float32),)
                        + accs[r * TW + c + 1:])
    for i in tl.static_range(TH + KH - 1):
        hi = h0 + DIL * i
        row_ok = (hi >= 0) & (hi < H)
        for j in tl.static_range(TW + KW - 1):
            wj = w0 + DIL * j
            ok = row_ok & (wj >= 0) & (wj < W)
            xv = _to_f32(tl.load(xb + (DIL * i * SXH + DIL * j * SXW), mask=c_mask & ok, other=0.0), PACKED)
            for kh in tl.static_range(KH):
                if i - kh >= 0 and i - kh < TH:
                    for kw in tl.static_range(KW):
                        if j - kw >= 0 and j - kw < TW:
                            # inline index: a name assigned in a jit function becomes a tensor
                            accs = (accs[:(i - kh) * TW + j - kw] + (accs[(i - kh) * TW + j - kw] + xv * ws[kh * KW + kw],)
                                    + accs[(i - kh) * TW + j - kw + 1:])
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    for r in tl.static_range(TH):
        ho = ph + DIL * (th * TH + r)
        for c in tl.static_range(TW):
            wo = pw + DIL * (tw * TW + c)
            acc = accs[r * TW + c]
            if HAS_BIAS:
                acc += bias
            m = c_mask & (ho < H) & (wo < W)
            tl.store(Y + b * syb + ho * SYH + wo * SYW + offs_c, acc.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _stream_row(xrow, row_ok, w0, W, ws, slots, c_mask, KH_LO: tl.constexpr, KH_HI: tl.constexpr,
                SXW: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, PACKED: tl.constexpr, TW: tl.constexpr):
    """One input row of a stream: its TW + KW - 1 pixels, each loaded and converted once, FMA'd into
    the accumulator slots KH_LO..KH_HI (slot kh: the output row that takes this row as tap row kh)."""
    for j in tl.static_range(TW + KW - 1):
        wj = w0 + DIL * j
        xv = _to_f32(tl.load(xrow + DIL * j * SXW, mask=c_mask & row_ok & (wj >= 0) & (wj < W), other=0.0), PACKED)
        for kh in tl.static_range(KH_LO, KH_HI + 1):
            for kw in tl.static_range(KW):
                if j - kw >= 0 and j - kw < TW:
                    slots = (slots[:kh * TW + j - kw] + (slots[kh * TW + j - kw] + xv * ws[kh * KW + kw],)
                             + slots[kh * TW + j - kw + 1:])
    return slots


@triton.jit
def _stream_store(slots, bias, R, Y, b, srb, syb, ho, pw, tw, offs_c, c_mask, H, W,
                  SRH: tl.constexpr, SRW: tl.constexpr, SYH: tl.constexpr, SYW: tl.constexpr, KH: tl.constexpr,
                  DIL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, TW: tl.constexpr):
    """Store the finished output row (slot KH - 1) and shift the slots down by one row."""
    for c in tl.static_range(TW):
        wo = pw + DIL * (tw * TW + c)
        acc = slots[(KH - 1) * TW + c]
        if HAS_BIAS:
            acc += bias
        m = c_mask & (ho < H) & (wo < W)
        tl.store(Y + b * syb + ho * SYH + wo * SYW + offs_c, acc.to(Y.dtype.element_ty), mask=m)
    return slots[:(KH - 1) * TW]


@triton.jit
def _stream_birth(R, b, srb, ho, pw, tw, offs_c, c_mask, H, W, SRH: tl.constexpr, SRW: tl.constexpr,
                  DIL: tl.constexpr, HAS_RES: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr):
    """The TW slots of output row ``ho`` as it enters the stream: its residual (loaded KH input
    rows before the row is stored, so the loads are long done) or zeros."""
    new = ()
    for c in tl.static_range(TW):
        if HAS_RES:
            new = new + (tl.load(R + b * srb + ho * SRH + (pw + DIL * (tw * TW + c)) * SRW + offs_c,
                                 mask=c_mask & (ho < H) & (pw + DIL * (tw * TW + c) < W), other=0.0).to(tl.float32),)
        else:
            new = new + (tl.zeros([BLOCK_C], dtype=tl.float32),)
    return new


@triton.jit
def _dw_stream_kernel(
    X, Wt, Bias, R, Y,
    sxb, srb, syb, C, H, W, n_rb, n_tw,
    SXH: tl.constexpr, SXW: tl.constexpr, SRH: tl.constexpr, SRW: tl.constexpr,
    SYH: tl.constexpr, SYW: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, PACKED: tl.constexpr, EVEN_C: tl.constexpr,
    NR: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Channels-last depthwise conv streaming down a TW-pixel column strip of one dilation phase
    (both axes), NR output rows per program: each input row is loaded once and feeds the KH output
    rows it reaches, kept as KH x TW accumulator slots that shift by one row per input row (a
    finished row is stored as it leaves). The first and last KH - 1 input rows are peeled
    (static), so no FMA goes to a row outside the block."""
    b, ph, pw, rb, tw, offs_c, c_mask, ws = _phase_program(n_rb, n_tw, C, Wt, DIL, KH * KW, FLIP, EVEN_C, BLOCK_C)
    m0 = rb * NR
    if HAS_BIAS:
        bias = tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros([BLOCK_C], dtype=tl.float32)
    HALF_H: tl.constexpr = (KH - 1) // 2
    HALF_W: tl.constexpr = (KW - 1) // 2
    w0 = pw + DIL * (tw * TW - HALF_W)
    h0 = ph + DIL * (m0 - HALF_H)   # input row of it = 0
    xb = X + b * sxb + w0 * SXW + offs_c
    # slot kh holds the output row taking the current input row as its tap row kh; for input row
    # it (block-relative) output row it enters at slot 0, with its residual when there is one
    slots = (tl.zeros([BLOCK_C], dtype=tl.float32),) * ((KH - 1) * TW)
    for it in tl.static_range(KH - 1):   # rows feeding only the block's first outputs
        hi = h0 + DIL * it
        slots = _stream_birth(R, b, srb, ph + DIL * (m0 + it), pw, tw, offs_c, c_mask, H, W, SRH, SRW, DIL, HAS_RES,
                              TW, BLOCK_C) + slots
        slots = _stream_row(xb + hi * SXH, (hi >= 0) & (hi < H), w0, W, ws, slots, c_mask, 0, it,
                            SXW, KW, DIL, PACKED, TW)
        slots = slots[:(KH - 1) * TW]
    for it in range(KH - 1, NR):
        hi = h0 + DIL * it
        slots = _stream_birth(R, b, srb, ph + DIL * (m0 + it), pw, tw, offs_c, c_mask, H, W, SRH, SRW, DIL, HAS_RES,
                              TW, BLOCK_C) + slots
        slots = _stream_row(xb + hi * SXH, (hi >= 0) & (hi < H), w0, W, ws, slots, c_mask, 0, KH - 1,
                            SXW, KW, DIL, PACKED, TW)
        slots = _stream_store(slots, bias, R, Y, b, srb, syb, ph + DIL * (m0 + it - KH + 1), pw, tw, offs_c, c_mask,
                              H, W, SRH, SRW, SYH, SYW, KH, DIL, HAS_BIAS, HAS_RES, TW)
    for e in tl.static_range(KH - 1):    # rows feeding only the block's last outputs
        hi = h0 + DIL * (NR + e)
        slots = (tl.zeros([BLOCK_C], dtype=tl.float32),) * TW + slots   # rows past the block: never stored
        slots = _stream_row(xb + hi * SXH, (hi >= 0) & (hi < H), w0, W, ws, slots, c_mask, e + 1, KH - 1,
                            SXW, KW, DIL, PACKED, TW)
        slots = _stream_store(slots, bias, R, Y, b, srb, syb, ph + DIL * (m0 + NR + e - KH + 1), pw, tw, offs_c,
                              c_mask, H, W, SRH, SRW, SYH, SYW, KH, DIL, HAS_BIAS, HAS_RES, TW)


def _phase_launch(kernel, rows: tuple, x, weight, bias, dilation, flip, residual, out, tw, block_c, warps, packed,
                  even, maxnreg):
    """Launch a channels-last phase-tiled conv (``_dw_stream_kernel`` or ``_dw_tile_kernel``);
    ``rows`` = (name, value) of its rows per program (NR or TH)."""
    bsz, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    weight = weight.contiguous()
    out = torch.empty_like(x) if out is None else out
    res = residual if residual is not None else out
    for t in (x, res, out):
        assert t.stride(1) == 1, "channels-last only"
    n_rows, n_tw = cdiv(cdiv(h, dilation), rows[1]), cdiv(cdiv(w, dilation), tw)
    block_c = min(block_c, triton.next_power_of_2(c))
    if packed is None:   # pairs of bf16 per thread
        packed = x.dtype == torch.bfloat16 and not interpret_mode() and block_c >= 64 * warps
    if even is None:
        even = c % block_c == 0
    meta = dict(SXH=x.stride(2), SXW=x.stride(3), SRH=res.stride(2), SRW=res.stride(3), SYH=out.stride(2),
                SYW=out.stride(3), KH=kh, KW=kw, DIL=dilation, FLIP=flip, HAS_BIAS=bias is not None,
                HAS_RES=residual is not None, PACKED=packed, EVEN_C=even, TW=tw, BLOCK_C=block_c, num_warps=warps)
    meta[rows[0]] = rows[1]
    if maxnreg is not None:
        meta["maxnreg"] = maxnreg
    grid = (bsz * dilation * dilation * n_rows * n_tw, cdiv(c, block_c))
    kernel[grid](x, weight, bias if bias is not None else weight, res, out, x.stride(0), res.stride(0),
                 out.stride(0), c, h, w, n_rows, n_tw, **meta)
    return out


def dw_stream(x, weight, bias, dilation, flip=False, residual=None, out=None, nr=16, tw=8, block_c=64, warps=1,
              packed=None, even=None, maxnreg=None):
    """Same contract as ops' ``dw_conv`` for channels-last x (and residual / out), streamed."""
    return _phase_launch(_dw_stream_kernel, ("NR", max(nr, weight.shape[-2] - 1)), x, weight, bias, dilation, flip,
                         residual, out, tw, block_c, warps, packed, even, maxnreg)


def dw_tile(x, weight, bias, dilation, flip=False, residual=None, out=None, th=4, tw=8, block_c=64, warps=1,
            packed=None, even=None, maxnreg=None):
    """Same contract as ops' ``dw_conv`` for channels-last x (and residual / out), in static tiles."""
    return _phase_launch(_dw_tile_kernel, ("TH", th), x, weight, bias, dilation, flip, residual, out, tw, block_c,
                         warps, packed, even, maxnreg)


def reference(x, weight, bias, dilation, flip=False, residual=None):
    k = weight.shape[-1]
    w = weight.flip(-1, -2) if flip else weight
    y = F.conv2d(x.double(), w.double(), None if bias is None else bias.double(), padding=dilation * (k - 1) // 2,
                 dilation=dilation, groups=x.shape[1])
    return y if residual is None else y + residual.double()


def check() -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = (torch.float32, torch.float16, torch.bfloat16) if dev == "cuda" else (torch.float32, torch.float16)
    torch.manual_seed(0)
    cases = [(2, 24, 13, 11, 5, 1, 4, 8, 32), (1, 64, 17, 20, 7, 3, 4, 4, 64), (2, 40, 9, 30, 5, 1, 2, 8, 16),
             (1, 16, 23, 19, 7, 3, 3, 5, 16), (1, 8, 5, 6, 3, 1, 4, 4, 8)]
    worst = 0.0
    for (b, c, h, w, k, d, th, tw, bc), dtype, flip, res in itertools.product(cases, dtypes, (False, True),
                                                                             (False, True)):
        x = torch.randn(b, c, h, w, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        wt = torch.randn(c, 1, k, k, device=dev) * 0.2
        bias = None if flip else torch.randn(c, device=dev)
        r = torch.randn_like(x) if res else None
        out = torch.full_like(x, float("nan"))   # poisoned: every element must be written
        dw_tile(x, wt, bias, d, flip, r, out, th=th, tw=tw, block_c=bc)
        ref = reference(x, wt, bias, d, flip, r)
        err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
        tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
        assert err < tol, (b, c, h, w, k, d, th, tw, bc, dtype, flip, res, err)
        worst = max(worst, err) if dtype == torch.float32 else worst
    print(f"check on {dev}: all cases within tolerance (worst fp32 relative error {worst:.1e})")


def sass() -> None:
    """Registers, spills and SASS size of the tile kernel (sm_90a, offline) for the LKA convs."""
    from sm90_registers import compile_sm90, ptxas_usage, sass_counts
    sig = {n: ("*bf16" if n in ("X", "R", "Y") else "*fp32" if n in ("Wt", "Bias") else "i32")
           for n in _dw_tile_kernel.arg_names}
    for (c, hw), (k, d), flip, (th, tw), mr in itertools.product(
            ((64, 56),), ((5, 1), (7, 3)), (False, True), ((4, 8), (4, 4), (2, 8), (3, 6), (4, 6)), (None,)):
        consts = dict(SXH=hw * c, SXW=c, SRH=hw * c, SRW=c, SYH=hw * c, SYW=c, KH=k, KW=k, DIL=d, FLIP=flip,
                      HAS_BIAS=not flip, HAS_RES=flip, PACKED=True, EVEN_C=True, TH=th, TW=tw, BLOCK_C=64)
        err, cubin = compile_sm90(_dw_tile_kernel, sig, consts, {"C", "sxb", "srb", "syb"}, 1)
        regs, spill = ptxas_usage(err)
        counts = sass_counts(cubin)
        total = sum(counts.values())
        fma = counts["FFMA"]
        print(f"C{c} {hw}x{hw} {k}x{k} d{d} flip={flip} tile {th}x{tw}: {regs} registers, {spill} B spills, "
              f"{total} SASS ({fma} FFMA, {total / max(fma, 1):.2f} per FFMA; LDG {counts['LDG']}, "
              f"MOV {counts['MOV']}, LOP3 {counts['LOP3']}, SHF {counts['SHF']} IMAD.SHL {counts['IMAD']})",
              flush=True)


TILES = {(5, 1): [(4, 8), (4, 4), (2, 8), (4, 6)], (7, 3): [(4, 4), (2, 8), (3, 6), (4, 8)]}
CHANNELS = [(64, 1), (128, 1), (64, 2)]   # (BLOCK_C, warps): 2, 4 and 1 channels per thread
# the stream's (TW, (BLOCK_C, warps)); its rows per program: a dilation phase's rows in 2 or 4 blocks
# (dilation 1) or 1 or 2
STREAMS = {(5, 1): [(4, (64, 1)), (8, (64, 1)), (4, (64, 2)), (8, (64, 2))],
           (7, 3): [(4, (64, 2))]}


def jobs(kind: str):
    """(kind, shape, kernel, dilation, flip, config) of the timing sweep: config (TH, TW, BLOCK_C,
    warps) for ``tile``, (NR, TW, BLOCK_C, warps) for ``stream`` (input gradients: two configs)."""
    from lka_case import BENCH, VAN
    for (b, c, sz), (k, d), flip in itertools.product(BENCH + [VAN[4]], ((5, 1), (7, 3)), (False, True)):
        if kind == "tile":
            for (th, tw), (bc, warps) in itertools.product(TILES[(k, d)], CHANNELS):
                if bc <= c and not (bc // (32 * warps) >= 4 and th * tw > 16):   # 4 channels a thread: small tiles
                    yield kind, (b, c, sz), k, d, flip, (th, tw, bc, warps)
        else:
            phase = cdiv(sz, d)
            splits = (2, 4) if d == 1 else (1,)
            for n, (tw, (bc, warps)) in itertools.product(splits, STREAMS[(k, d)]):
                if not flip or (n == splits[0] and warps == 2):
                    yield kind, (b, c, sz), k, d, flip, (cdiv(phase, n), tw, bc, warps)


def _tensors(b, c, sz, k):
    x, r = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
            .contiguous(memory_format=torch.channels_last) for _ in range(2))
    return x, r, torch.randn(c, 1, k, k, device="cuda") * 0.2, torch.randn(c, device="cuda")


def _run(kind, x, wt, bias, d, flip, r, y, cfg):
    a, tw, bc, warps = cfg
    if kind == "tile":
        return dw_tile(x, wt, bias, d, flip, r, y, th=a, tw=tw, block_c=bc, warps=warps)
    return dw_stream(x, wt, bias, d, flip, r, y, nr=a, tw=tw, block_c=bc, warps=warps)


def _compile(job) -> str:
    """Compile one job's kernel (batch 1: the kernel specializes on nothing that batch changes)."""
    kind, (b, c, sz), k, d, flip, cfg = job
    x, r, wt, bias = _tensors(1, c, sz, k)
    try:
        _run(kind, x, wt, None if flip else bias, d, flip, r if flip else None, None, cfg)
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{job}: {type(e).__name__}: {e}"[:200]


def time_kind(kind: str) -> None:
    """Times every job against ops' dw_conv (bf16 channels-last); compiles first in a pool of
    processes (Triton's cache then serves the timing process)."""
    import concurrent.futures
    import multiprocessing
    from lka_case import us
    want = set(sys.argv[3:])   # e.g. 5x5, 7x7, fwd, dx: keep the jobs that match every axis named
    kernels, dirs = want & {"5x5", "7x7"}, want & {"fwd", "dx"}
    todo = [j for j in jobs(kind) if (not kernels or f"{j[2]}x{j[2]}" in kernels)
            and (not dirs or ("dx" if j[4] else "fwd") in dirs)]
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    groups = {}
    for job in todo:
        groups.setdefault(job[1:5], []).append(job)
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for ((b, c, sz), k, d, flip), group in groups.items():   # compile a group in parallel, then time it
        for msg in pool.map(_compile, group):
            if msg:
                print("compile failed:", msg, flush=True)
        configs = [job[5] for job in group]
        torch.manual_seed(0)
        x, r, wt, bias = _tensors(b, c, sz, k)
        bias_, res = (None, r) if flip else (bias, None)
        y0 = torch.empty_like(x)
        base = lambda: dw_conv(x, wt, bias_, d, flip=flip, residual=res, out=y0)  # noqa: E731
        base()
        ref = y0.clone()
        rows = []
        for cfg in configs:
            y1 = torch.full_like(x, float("nan"))
            fn = lambda: _run(kind, x, wt, bias_, d, flip, res, y1, cfg)  # noqa: E731
            label = ("{}x{}" if kind == "tile" else "NR{} TW{}").format(*cfg[:2]) + f" C{cfg[2]} w{cfg[3]}"
            try:
                fn()
            except Exception as e:   # e.g. out of resources
                print(f"  {label}: {type(e).__name__}", flush=True)
                continue
            diff = (y1.float() - ref.float()).abs().max().item()
            t = statistics.median(us(fn) for _ in range(3))
            rows.append((t, f"{label} {t:.1f} us (diff {diff:.1e})"))
        t0 = statistics.median(us(base) for _ in range(3))
        rows.sort()
        print(f"{kind} B{b} C{c} {sz}x{sz} {k}x{k} d{d} {'dx' if flip else 'fwd'}: ops {t0:.1f} us; "
              + "; ".join(s for _, s in rows[:5]) + f" -> best {t0 / rows[0][0]:.2f}x", flush=True)
    pool.shutdown()


def cap() -> None:
    """ops' row-block 5x5 with unmasked channels (EVEN_C) under a 168-register cap against the
    rule's launch (session 32, offline: EVEN_C compiles to 193 registers, 2 CTAs per SM instead of
    4; capped it fits 128 without spills)."""
    from lka_case import BENCH, VAN, us
    from ops.lka.kernels import _dw_rows, dw_launch
    for (b, c, sz), flip in itertools.product(BENCH + [VAN[4]], (False, True)):
        x, r, wt, bias = _tensors(b, c, sz, 5)
        grid, scalars, meta = dw_launch(tuple(x.shape), x.dtype, (5, 5), 1, flip, not flip, flip, (x.stride(),) * 3)
        ys = [torch.empty_like(x) for _ in range(4)]
        arms = {}
        for i, extra in enumerate(({}, {"EVEN_C": True}, {"EVEN_C": True, "maxnreg": 168}, {"maxnreg": 128})):
            def fn(i=i, m={**meta, **extra}):
                _dw_rows[grid](x, wt, wt if flip else bias, r if flip else ys[i], ys[i], *scalars, **m)
            fn()
            arms[str(extra or "rule")] = fn
        diff = max((y.float() - ys[0].float()).abs().max().item() for y in ys[1:])
        t = {k: statistics.median(us(f) for _ in range(3)) for k, f in arms.items()}
        print(f"B{b} C{c} {sz}x{sz} 5x5 {'dx' if flip else 'fwd'} (rule {meta}): "
              + "; ".join(f"{k} {v:.1f}" for k, v in t.items()) + f" us (diff {diff:.0e})", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    if mode in ("tile", "stream"):
        time_kind(mode)
    else:
        {"check": check, "sass": sass, "cap": cap}[mode]()
