"""Probe (session 34): the LKA's last depthwise conv, its 1x1 and the gate in one kernel.

ops' LKA forward is three launches: the 5x5 (35 us at B64 C64 56x56, bf16, channels-last), the
7x7 dilation 3 (~70 us) and the 1x1 + gate (~20 us: it reads s = the 7x7's output and x, writes
out, ~3.9 TB/s). When one program's channel block holds every channel (C <= 64 here), the 7x7's
row blocks can end in the 1x1 on tensor cores (each output row's [columns, C] strip times W1^T)
and the gate, so s never travels (inference) or is written but not read back (training, where
the backward needs it). That saves 2 (or 1) of the chain's ~6 map transfers and a launch, if the
conv's FMAs, still the bound, hide the extra loads of x and the dots.

Session 9 measured a fused 7x7 + 1x1 + gate losing 2.2x (B128 C128 28x28), but on a per-tap conv
core that was itself 1.6-2x slower than the row blocks it is built on here.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe80.py check        # interpreter: vs fp64
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe80.py registers    # offline sm_90a registers
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe80.py sweep [WORKERS]   # GPU: LKA forward A/B
"""
import itertools
import statistics
import sys

import torch
import triton
import triton.language as tl

from ops.common import dot_precision, interpret_mode
from ops.common.tuning import cdiv, next_power_of_2
from ops.lka.kernels import _dw_row_block, _packed


@triton.jit
def _dw_gate_kernel(
    A, Wt, Bias, W1, B1, X, S, OUT,
    sab, sac, sah, saw,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    C, H, W, n_rblocks,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, STORE_S: tl.constexpr, X_FIRST: tl.constexpr,
    PACKED: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out = x * (W1 @ (dw(a) + bias) + b1), s = dw(a) + bias stored when STORE_S (S takes out's
    strides): one program per (batch item, dilation phase, block of ROWS rows) x column strip, all
    C <= BLOCK_C channels. The conv is ops' row-block core; each output row's [BLOCK_W, C] strip,
    rounded to the map dtype as the separate kernels store it, meets W1^T in one ``tl.dot``."""
    pid = tl.program_id(0)
    per_b = DIL * n_rblocks
    b = (pid // per_b).to(tl.int64)
    phase = (pid % per_b) % DIL
    m0 = ((pid % per_b) // DIL) * ROWS
    offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    offs_c = tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    m = (offs_w < W)[:, None] & c_mask[None, :]
    us = ()
    if X_FIRST:   # the gate's inputs in flight during the taps
        for r in tl.static_range(ROWS):
            row = phase + DIL * (m0 + r)
            us = us + (tl.load(X + b * sxb + row * sxh + offs_w[:, None] * sxw + offs_c[None, :] * sxc,
                               mask=m & (row < H), other=0.0),)
    accs = ()
    for r in tl.static_range(ROWS):
        accs = accs + (tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32),)
    accs = _dw_row_block(accs, A + b * sab + offs_c[None, :] * sac, sah, saw, Wt, offs_w, offs_c, c_mask,
                         phase, m0, H, W, KH, KW, DIL, False, PACKED, ROWS, BLOCK_W, BLOCK_C)
    bias = tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    # W1^T [C_in, C_out]: W1[o, i] at o * C + i
    w1t = tl.load(W1 + offs_c[:, None] + offs_c[None, :] * C, mask=c_mask[:, None] & c_mask[None, :], other=0.0)
    if UPCAST:
        w1t = w1t.to(tl.float32)
    b1 = tl.load(B1 + offs_c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    for r in tl.static_range(ROWS):
        row = phase + DIL * (m0 + r)
        mr = m & (row < H)
        offs = b * sob + row * soh + offs_w[:, None] * sow + offs_c[None, :] * soc
        s = (accs[r] + bias).to(OUT.dtype.element_ty)
        if STORE_S:
            tl.store(S + offs, s, mask=mr)
        if UPCAST:
            s = s.to(tl.float32)
        t = tl.dot(s, w1t.to(s.dtype), input_precision=PRECISION) + b1
        if X_FIRST:
            u = us[r]
        else:
            u = tl.load(X + b * sxb + row * sxh + offs_w[:, None] * sxw + offs_c[None, :] * sxc, mask=mr, other=0.0)
        tl.store(OUT + offs, (u.to(tl.float32) * t).to(OUT.dtype.element_ty), mask=mr)


def dw_gate(a, weight, bias, dilation, w1, b1, x, out=None, s=None, rows=None, block_w=16, warps=4, x_first=False):
    """out = x * (w1 @ dw(a) + b1) (NCHW-indexed [B, C, H, W] maps, any strides), s = dw(a) stored
    when given. ``w1`` [C, C] in the maps' dtype, ``weight`` [C, 1, kh, kw] contiguous."""
    bsz, c, h, w = a.shape
    if c > 128:
        raise ValueError(f"one channel block holds at most 128 channels, got {c}")
    kh, kw = weight.shape[-2:]
    per_phase = cdiv(h, dilation)
    max_rows = rows or 12
    rows = cdiv(per_phase, cdiv(per_phase, max_rows))
    block_c = max(16, next_power_of_2(c))
    if interpret_mode():
        block_w = max(16, min(32, next_power_of_2(w)))
    n_rblocks = cdiv(per_phase, rows)
    out = torch.empty_like(x) if out is None else out
    upcast, precision = dot_precision(x.dtype)
    grid = (bsz * dilation * n_rblocks, cdiv(w, block_w))
    _dw_gate_kernel[grid](a, weight, bias, w1, b1, x, out if s is None else s, out,
                          *a.stride(), *x.stride(), *out.stride(), c, h, w, n_rblocks,
                          KH=kh, KW=kw, DIL=dilation, STORE_S=s is not None, X_FIRST=x_first,
                          PACKED=_packed(x.dtype) and w > 14, UPCAST=upcast, PRECISION=precision,
                          ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)
    return out


def _params(c, device, dtype=torch.float32):
    from lka_case import lka_params
    p = lka_params(c, device)
    return [t.to(dtype) for t in p]


def check() -> None:
    """Fused 7x7 d3 (and 5x5) + 1x1 + gate against the fp64 chain, poisoned outputs, odd sizes."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    for (b, c, h, w), dtype, (k, d), cl, x_first in itertools.product(
            [(2, 32, 13, 11), (1, 48, 20, 17), (1, 64, 9, 30)], (torch.float32, torch.float16),
            [(7, 3), (5, 1)], (True, False), (False, True)):
        x = torch.randn(b, c, h, w, dtype=dtype)
        a = torch.randn(b, c, h, w, dtype=dtype)
        if cl:
            x, a = (t.contiguous(memory_format=torch.channels_last) for t in (x, a))
        wt = (torch.randn(c, 1, k, k) * 0.1).to(dtype)
        bias = torch.randn(c).to(dtype)
        w1 = (torch.randn(c, c) * c ** -0.5).to(dtype)
        b1 = torch.randn(c).to(dtype)
        out = torch.full_like(x, float("nan"))
        s = torch.full_like(x, float("nan"))
        dw_gate(a, wt, bias, d, w1, b1, x, out=out, s=s, x_first=x_first)
        s_ref = F.conv2d(a.double(), wt.double(), bias.double(), padding=d * (k - 1) // 2, dilation=d, groups=c)
        t_ref = torch.einsum("oi,bihw->bohw", w1.double(), s_ref.to(dtype).double()) + b1.double()[:, None, None]
        ref = x.double() * t_ref
        es = ((s.double() - s_ref).abs().max() / s_ref.abs().max()).item()
        eo = ((out.double() - ref).abs().max() / ref.abs().max()).item()
        tol = 1e-5 if dtype == torch.float32 else 2e-3
        ok = es < tol and eo < tol and not out.isnan().any() and not s.isnan().any()
        print(f"B{b} C{c} {h}x{w} {dtype} {k}x{k} d{d} cl={cl} x_first={x_first}: s {es:.1e}, out {eo:.1e}"
              + ("" if ok else "  FAIL"), flush=True)
        assert ok


SHAPES = [(64, 64, 56), (16, 64, 128), (128, 32, 56), (128, 64, 28), (128, 64, 56), (64, 128, 28)]
# the configs without spills offline (``registers``), by (max rows, columns, warps, x first)
CONFIGS = [dict(rows=r, block_w=bw, warps=wp, x_first=xf)
           for r, bw, wp, xf in [(12, 16, 8, False), (12, 16, 8, True), (6, 16, 8, False), (6, 16, 8, True),
                                 (12, 16, 4, False), (6, 16, 4, False), (12, 32, 8, False), (12, 16, 16, False)]]


def _inputs(b, c, sz):
    x = torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    p = _params(c, "cuda")
    return x, p


def _compile(job) -> str:
    (b, c, sz), cfg = job
    x, p = _inputs(1, c, sz)
    a = torch.empty_like(x)
    w1 = p[4].reshape(c, c).to(x.dtype)
    try:
        dw_gate(a, p[2], p[3], 3, w1, p[5], x, **cfg)
        dw_gate(a, p[2], p[3], 3, w1, p[5], x, s=torch.empty_like(x), **cfg)
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{job}: {type(e).__name__}: {e}"[:200]


def sweep() -> None:
    """The LKA forward (bf16 channels-last, CUDA graphs): ops (three launches) against ops' 5x5
    then the fused kernel, every config, without and with s stored."""
    import concurrent.futures
    import multiprocessing

    import ops
    from lka_case import us
    from ops.lka.kernels import dw_conv
    from probe78 import graphed
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for msg in pool.map(_compile, [(shape, cfg) for shape in SHAPES for cfg in CONFIGS]):
        if msg:
            print("compile failed:", msg, flush=True)
    pool.shutdown()
    for b, c, sz in SHAPES:
        torch.manual_seed(0)
        x, p = _inputs(b, c, sz)
        w1 = p[4].reshape(c, c).to(x.dtype)
        a1, s, out = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        with torch.no_grad():
            ref = ops.large_kernel_attention(x, *p)
        base = graphed(lambda: ops.large_kernel_attention(x, *p))

        def fused(cfg, store):
            dw_conv(x, p[0], p[1], 1, out=a1)
            dw_gate(a1, p[2], p[3], 3, w1, p[5], x, out=out, s=s if store else None, **cfg)

        rows = []
        for cfg in CONFIGS:
            try:
                fused(cfg, False)
            except Exception as e:
                print(f"  {cfg}: {type(e).__name__}", flush=True)
                continue
            diff = (out.float() - ref.float()).abs().max().item()
            fn = graphed(lambda cfg=cfg: fused(cfg, False))
            rows.append((statistics.median(us(fn) for _ in range(3)), cfg, diff))
        rows.sort(key=lambda r: r[0])
        best = rows[0][1]
        t_store = statistics.median(us(graphed(lambda: fused(best, True))) for _ in range(3))
        t0 = statistics.median(us(base) for _ in range(3))
        t0b = statistics.median(us(base) for _ in range(3))
        print(f"B{b} C{c} {sz}x{sz} LKA fwd, CUDA graphs: ops {t0:.1f}/{t0b:.1f} us; fused "
              + "; ".join(f"R{cf['rows']} W{cf['block_w']} w{cf['warps']}{' xf' if cf['x_first'] else ''} "
                          f"{t:.1f} (diff {d:.1e})" for t, cf, d in rows[:4])
              + f"; best with s stored {t_store:.1f} -> {t0 / rows[0][0]:.2f}x", flush=True)


def registers() -> None:
    """Offline sm_90a registers and spills of each config (``sm90_registers``; put the GPU's Triton
    first on PYTHONPATH), on the 56x56 map (10 rows of a phase with up to 12, 5 with up to 6)."""
    from sm90_registers import report
    for cfg, c, store in itertools.product(CONFIGS, (64, 32), (False, True)):
        if cfg["x_first"] and store:
            continue
        rows = 10 if cfg["rows"] == 12 else 5
        consts = dict(sac=1, sxc=1, soc=1, KH=7, KW=7, DIL=3, STORE_S=store, X_FIRST=cfg["x_first"], PACKED=True,
                      UPCAST=False, PRECISION="tf32", ROWS=rows, BLOCK_W=cfg["block_w"], BLOCK_C=c)
        report(f"C{c} R{rows} W{cfg['block_w']}{' xf' if cfg['x_first'] else ''}{' s' if store else ''}",
               _dw_gate_kernel, consts, cfg["warps"])


if __name__ == "__main__":
    {"check": check, "sweep": sweep, "registers": registers}[sys.argv[1]]()
