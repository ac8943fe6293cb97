"""Probe (session 31): the LKA's 1x1 + gate, pixels as the MMA's N instead of its M.

probe75 found its NCHW 1x1 + gate (W1 [C, C] @ s [C, pixels], one image's pixels contiguous) at
26 us on B64 C64 56x56 against 39 us for ``ops.lka.kernels.pw_gate`` on channels-last maps (its
tiles are [pixels, channels] with t = s @ W1^T) and 46 us on NCHW. Here a strided version of the
transposed orientation (co blocks x pixel blocks, a pipelined loop over input-channel blocks) is
swept on both layouts against the current kernel's tiles, on the bench's and VAN's shapes. The
weights are cast once outside the timed calls for both (``pw_weight``).

Session 31 made this orientation ops' 1x1 kernel, forward and backward (``_pw_kernel``, rule
``_pw_config``); the sweep now runs that kernel with its tiles overridden (``pw_gate_t``; the
recorded sweep, at 32f34c4, ran its prototype on a 2-D grid). The kernels it replaced are kept
here (``_pw_gate_old_kernel``, ``_pw_gate_bwd_old_kernel``, with their helpers and launch rule).
``--ab`` times old and new forwards at their rules, alternating, in one process, ``--ab-bwd``
the backwards (one launch against two), ``--lka`` the LKA forward with each gate, replayed from
CUDA graphs.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe76.py [--ab | --ab-bwd | --lka]
    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe76.py --check
"""
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import ops
from ops.common import dot_precision, interpret_mode
from ops.common.tuning import cdiv, next_power_of_2
from ops.lka.kernels import (PW_GATE, _interp_pixel_block, _pw_kernel, pw_gate, pw_gate_backward, pw_launch,
                             pw_weight)
from lka_case import BENCH, VAN, lka_params, us


# ops' 1x1 + gate forward and backward up to session 30 (151d663), with their helpers and launch rule
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
def _pw_gate_old_kernel(
    S, W1, B1, X, OUT,
    ssb, ssc, ssh, ssw,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    C, H, W, n_ptiles,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr,
):
    """ops' forward 1x1 + gate up to session 30 (4fd312a): [pixels, channels] tiles, t = s @ W1^T."""
    b, offs_h, offs_w, p_mask = _pixel_tile(tl.program_id(0), n_ptiles, H, W, BLOCK_P)
    offs_ci = tl.arange(0, BLOCK_CI)
    ci_mask = offs_ci < C
    s = tl.load(S + b * ssb + offs_h[:, None] * ssh + offs_w[:, None] * ssw + offs_ci[None, :] * ssc,
                mask=p_mask[:, None] & ci_mask[None, :], other=0.0)
    if UPCAST:  # fp32 operands: exact dot (and the interpreter's bf16 dot is wrong)
        s = s.to(tl.float32)
    for co0 in range(0, C, BLOCK_CO):
        t, w1t, offs_co, co_mask = _pw_tile(s, W1, B1, offs_ci, ci_mask, co0, C, BLOCK_CO, PRECISION)
        m = p_mask[:, None] & co_mask[None, :]
        u = tl.load(X + b * sxb + offs_h[:, None] * sxh + offs_w[:, None] * sxw + offs_co[None, :] * sxc,
                    mask=m, other=0.0).to(tl.float32)
        tl.store(OUT + b * sob + offs_h[:, None] * soh + offs_w[:, None] * sow + offs_co[None, :] * soc,
                 (u * t).to(OUT.dtype.element_ty), mask=m)


@triton.jit
def _pw_gate_bwd_old_kernel(
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


def _old_pw_config(c: int, hw: int) -> tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_CI, BLOCK_CO, num_warps) of the 1x1 + gate kernels, forward and backward.
    Every input channel of a pixel is in one tile (the 1x1 contracts over them), so wide layers
    take fewer pixels per tile."""
    block_ci = max(16, next_power_of_2(c))
    block_co = min(64, block_ci)
    warps = 4 if block_ci <= 128 else 8
    block_p = _interp_pixel_block(hw) if interpret_mode() else max(16, min(64, 8192 // block_ci))
    return block_p, block_ci, block_co, warps


def old_pw_launch(shape: tuple[int, ...], dtype: torch.dtype,
              strides: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """(grid, trailing scalars, meta-parameters) of a 1x1 + gate launch, forward (``strides`` of s,
    x, out) or backward (of s, x, grad, dx, dt, ds), on a [B, C, H, W] map of ``dtype``."""
    bsz, c, h, w = shape
    block_p, block_ci, block_co, warps = _old_pw_config(c, h * w)
    upcast, precision = dot_precision(dtype)
    n_ptiles = cdiv(h * w, block_p)
    meta = dict(UPCAST=upcast, PRECISION=precision, BLOCK_P=block_p, BLOCK_CI=block_ci, BLOCK_CO=block_co,
                num_warps=warps)
    return (bsz * n_ptiles,), (*(n for st in strides for n in st), c, h, w, n_ptiles), meta


def pw_gate_t(s, w1, b1, x, bp=128, bco=64, bci=64, warps=4, stages=2, out=None):
    """ops' 1x1 + gate (``_pw_kernel``, PW_GATE) with its tiles overridden; w1: [C, C] in x's dtype
    (pw_weight). (Session 31's sweep ran this orientation's prototype, a 2-D grid of the same
    loop, at 32f34c4.)"""
    bsz, c, h, w = x.shape
    out = torch.empty_like(x) if out is None else out
    bco, bci = min(bco, max(16, triton.next_power_of_2(c))), min(bci, max(16, triton.next_power_of_2(c)))
    _, scalars, meta = pw_launch(tuple(x.shape), x.dtype, PW_GATE, (s.stride(), x.stride(), out.stride()))
    n_pt, n_co = triton.cdiv(h * w, bp), triton.cdiv(c, bco)
    meta.update(BLOCK_P=bp, BLOCK_CO=bco, BLOCK_CI=bci, NUM_STAGES=stages, num_warps=warps)
    _pw_kernel[(bsz * n_pt * n_co,)](s, w1, b1, x, s, out, out, out, *scalars[:-2], n_pt, n_co, **meta)
    return out


def pw_gate_cur(s, w1, b1, x, out, block_p=None, block_co=None, warps=None):
    """The old kernel at its launch rule (``old_pw_launch``), or with its
    meta-parameters overridden."""
    grid, scalars, meta = old_pw_launch(tuple(x.shape), x.dtype, (s.stride(), x.stride(), out.stride()))
    if block_p:
        meta.update(BLOCK_P=block_p, BLOCK_CO=min(block_co, meta["BLOCK_CI"]), num_warps=warps)
        n_pt = triton.cdiv(x.shape[2] * x.shape[3], block_p)
        grid, scalars = (x.shape[0] * n_pt,), (*scalars[:-1], n_pt)
    _pw_gate_old_kernel[grid](s, w1, b1, x, out, *scalars, **meta)
    return out


def check():
    torch.manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        for c, cl in ((24, False), (24, True), (80, True)):
            x, s = torch.randn(2, c, 7, 9).to(dtype), torch.randn(2, c, 7, 9).to(dtype)
            if cl:
                x, s = (t.contiguous(memory_format=torch.channels_last) for t in (x, s))
            w1, b1 = torch.randn(c, c, 1, 1) * 0.2, torch.randn(c)
            wq = pw_weight(w1, dtype)
            ref = x.double() * F.conv2d(s.double(), w1.to(dtype).double(), b1.double())
            for bp, bco, bci in ((16, 16, 16), (32, 64, 32)):
                y = pw_gate_t(s, wq, b1, x, bp, bco, bci, 4, 2, out=torch.full_like(x, float("nan")))
                err = ((y.double() - ref).norm() / ref.norm()).item()
                print(f"{dtype} C{c} channels_last={cl} {bp}/{bco}/{bci}: rel. error {err:.2e}")
                assert err < 1e-2


def bench():
    torch.manual_seed(0)
    for b, c, sz in BENCH + VAN:
        x = torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
        s = torch.randn_like(x)
        w1 = torch.randn(c, c, 1, 1, device="cuda") * c ** -0.5
        b1 = torch.randn(c, device="cuda")
        wq = pw_weight(w1, x.dtype)
        ref = x.float() * F.conv2d(s.float(), wq.float().reshape(c, c, 1, 1), b1)
        for layout in ("CL", "NCHW"):
            xs, ss = (x, s) if layout == "NCHW" else (t.contiguous(memory_format=torch.channels_last) for t in (x, s))
            out = torch.empty_like(xs)
            cur = us(lambda: pw_gate_cur(ss, wq, b1, xs, out))
            rows, best = [], None
            for bp, bco, warps in [(64, 64, 4), (128, 64, 4), (128, 64, 8), (256, 64, 8), (32, 64, 4)]:
                try:
                    pw_gate_cur(ss, wq, b1, xs, out, bp, bco, warps)
                    t = us(lambda: pw_gate_cur(ss, wq, b1, xs, out, bp, bco, warps))
                    rows.append(f"cur {bp}/{bco} w{warps} {t:.1f}")
                except Exception as e:
                    rows.append(f"cur {bp}/{bco} w{warps} {type(e).__name__}")
            for bp, bco, bci, warps, ns in [(64, 64, 64, 4, 2), (128, 64, 64, 4, 2), (128, 128, 64, 8, 2),
                                            (256, 64, 64, 8, 2), (128, 64, 32, 4, 3), (64, 128, 64, 4, 2),
                                            (256, 128, 64, 8, 2), (128, 128, 128, 8, 1)]:
                try:
                    y = pw_gate_t(ss, wq, b1, xs, bp, bco, bci, warps, ns, out=out)
                    err = ((y.float() - ref).norm() / ref.norm()).item()
                    assert err < 1e-2, err
                    t = us(lambda: pw_gate_t(ss, wq, b1, xs, bp, bco, bci, warps, ns, out=out))
                    rows.append(f"T {bp}/{bco}/{bci} w{warps} ns{ns} {t:.1f}")
                    if best is None or t < best[0]:
                        best = (t, f"{bp}/{bco}/{bci} w{warps} ns{ns}")
                except Exception as e:
                    rows.append(f"T {bp}/{bco}/{bci} w{warps} ns{ns} {type(e).__name__}")
            gb = 3 * x.numel() * 2 / 1e9
            print(f"B{b} C{c} {sz}x{sz} {layout}: current {cur:.1f} us ({gb / cur * 1e6:.0f} GB/s), "
                  f"best transposed {best[0]:.1f} ({best[1]}, {gb / best[0] * 1e6:.0f} GB/s) | " + "; ".join(rows),
                  flush=True)


def ab(rounds=3):
    """Old kernel at its rule against ops' pw_gate, same inputs, alternating rounds; medians of
    the rounds' do_bench medians, us."""
    import statistics
    torch.manual_seed(0)
    for b, c, sz in BENCH + VAN:
        for layout in ("CL", "NCHW"):
            fmt = torch.channels_last if layout == "CL" else torch.contiguous_format
            x, s = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=fmt)
                    for _ in range(2))
            w1 = torch.randn(c, c, 1, 1, device="cuda") * c ** -0.5
            b1 = torch.randn(c, device="cuda")
            wq, out = pw_weight(w1, x.dtype), torch.empty_like(x)
            ref = pw_gate_cur(s, wq, b1, x, torch.empty_like(x)).float()
            err = ((pw_gate(s, w1, b1, x).float() - ref).norm() / ref.norm()).item()
            old, new = [], []
            for _ in range(rounds):
                old.append(us(lambda: pw_gate_cur(s, wq, b1, x, out)))
                new.append(us(lambda: pw_gate(s, wq, b1, x, out=out)))
            o, n = statistics.median(old), statistics.median(new)
            gb = 3 * x.numel() * 2 / 1e9
            print(f"B{b} C{c} {sz}x{sz} {layout}: old {o:.1f} us ({gb / o * 1e6:.0f} GB/s), new {n:.1f} us "
                  f"({gb / n * 1e6:.0f} GB/s), {o / n:.2f}x; new vs old rel. difference {err:.1e}", flush=True)


def ab_bwd(rounds=3):
    """The gate's backward: the old one-launch kernel at its rule against ops' two launches
    (dx and dt, then ds = W1^T dt), same inputs, alternating; us."""
    import statistics
    torch.manual_seed(0)
    for b, c, sz in BENCH + VAN:
        for layout in ("CL", "NCHW"):
            fmt = torch.channels_last if layout == "CL" else torch.contiguous_format
            x, s, g = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=fmt)
                       for _ in range(3))
            w1 = torch.randn(c, c, 1, 1, device="cuda") * c ** -0.5
            b1 = torch.randn(c, device="cuda")
            wq = pw_weight(w1, x.dtype)
            bufs = [torch.empty_like(x, memory_format=torch.channels_last) for _ in range(3)]
            old_bufs = [torch.empty_like(x, memory_format=torch.channels_last) for _ in range(3)]

            def old():
                grid, scalars, meta = old_pw_launch(tuple(x.shape), x.dtype, (s.stride(), x.stride(), g.stride(),
                                                                              *(t.stride() for t in old_bufs)))
                _pw_gate_bwd_old_kernel[grid](s, wq, b1, x, g, *old_bufs, *scalars, **meta)

            def new():
                pw_gate_backward(s, wq, b1, x, g, *bufs)
            old(), new()
            err = max(((n.float() - o.float()).norm() / o.float().norm()).item() for n, o in zip(bufs, old_bufs))
            t_old, t_new = [], []
            for _ in range(rounds):
                t_old.append(us(old))
                t_new.append(us(new))
            o, n = statistics.median(t_old), statistics.median(t_new)
            print(f"gate backward B{b} C{c} {sz}x{sz} {layout}: old {o:.1f} us, new {n:.1f} us, {o / n:.2f}x; "
                  f"max rel. difference {err:.1e}", flush=True)


def lka_graphs(rounds=3):
    """The LKA forward on the bench's shapes replayed from CUDA graphs (the GPU's time, not the
    host's): ops.large_kernel_attention (new gate) and the same two convs with the old gate."""
    import statistics
    from ops.lka.kernels import dw_conv

    def graphed(fn):
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g.replay

    torch.manual_seed(0)
    for b, c, sz in BENCH:
        for layout in ("CL", "NCHW"):
            fmt = torch.channels_last if layout == "CL" else torch.contiguous_format
            x = torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=fmt)
            p = lka_params(c)
            wq = pw_weight(p[4], x.dtype)
            xc = x.contiguous(memory_format=torch.channels_last)
            a, sm, out = (torch.empty_like(xc) for _ in range(3))

            def chain(gate):
                dw_conv(xc, p[0], p[1], 1, out=a)
                dw_conv(a, p[2], p[3], 3, out=sm)
                gate(sm, wq, p[5], xc, out)
            arms = {"ops": graphed(lambda: ops.large_kernel_attention(x, *p)),
                    "chain, old gate": graphed(lambda: chain(pw_gate_cur)),
                    "chain, new gate": graphed(lambda: chain(lambda s_, w_, b_, x_, o_: pw_gate(s_, w_, b_, x_, out=o_)))}
            times = {k: [] for k in arms}
            for _ in range(rounds):
                for k, fn in arms.items():
                    times[k].append(us(fn))
            print(f"LKA fwd {layout} B{b} C{c} {sz}x{sz}, CUDA graphs, us: "
                  + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    elif "--ab" in sys.argv:
        ab()
    elif "--ab-bwd" in sys.argv:
        ab_bwd()
    elif "--lka" in sys.argv:
        lka_graphs()
    else:
        bench()
