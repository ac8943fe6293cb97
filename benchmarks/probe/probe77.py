"""Probe (session 31, for the next GPU session): two follow-ups of the 1x1 kernel (``_pw_kernel``).

- ``bwd``: on maps of at most 64 channels one [channels, pixels] tile holds every channel, so the
  gate's backward fits one launch again: t = W1 @ s + b1, dx = g * t, dt = g * x and
  ds = W1^T @ dt from registers (``_pw_bwd_fused_kernel``), against ops' two launches (dx and dt,
  then ds re-reading dt). Saves a launch per LKA backward (eager VAN is bound by its host) and a
  read of dt.
- ``nchw``: the LKA forward on NCHW input without the copy back: x to channels-last once, the two
  convs, then the gate reading s channels-last and x NCHW and writing NCHW (``_pw_kernel`` takes
  any strides), against ``ops.large_kernel_attention`` (a copy each way, ~62 us each on B64 C64
  56x56, probe75) and the channels-last chain.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe77.py [bwd] [nchw]
    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe77.py --check

Written after session 31's device time ran out: checked only under the interpreter.
"""
import statistics
import sys

import torch
import triton
import triton.language as tl

import ops
from ops.common import dot_precision
from ops.lka import large_kernel_attention_reference
from ops.lka.kernels import dw_conv, pw_gate, pw_gate_backward, pw_weight
from lka_case import BENCH, VAN, lka_params, us

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _pw_bwd_fused_kernel(S, W1, B1, X, G, DX, DT, DS, C, HW, n_ptiles, sb, sc, sp,
                         UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_P: tl.constexpr,
                         BLOCK_C: tl.constexpr):
    """Backward of out = x * (W1 s + b1) for C <= BLOCK_C, one launch: every map with the same
    strides (sb, sc, sp per batch item, channel, pixel p = h * W + w)."""
    b = (tl.program_id(0) // n_ptiles).to(tl.int64)
    offs_p = (tl.program_id(0) % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = tl.arange(0, BLOCK_C)
    cm = ch < C
    m = cm[:, None] & (offs_p < HW)[None, :]
    off = b * sb + ch[:, None] * sc + offs_p[None, :] * sp
    w1 = tl.load(W1 + ch[:, None] * C + ch[None, :], mask=cm[:, None] & cm[None, :], other=0.0)
    s = tl.load(S + off, mask=m, other=0.0)
    if UPCAST:
        s = s.to(tl.float32)
    w1 = w1.to(s.dtype)
    t = tl.dot(w1, s, input_precision=PRECISION) + tl.load(B1 + ch, mask=cm, other=0.0).to(tl.float32)[:, None]
    u = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
    g = tl.load(G + off, mask=m, other=0.0).to(tl.float32)
    tl.store(DX + off, (g * t).to(DX.dtype.element_ty), mask=m)
    dt = (g * u).to(DT.dtype.element_ty)
    tl.store(DT + off, dt, mask=m)
    ds = tl.dot(tl.trans(w1), dt.to(s.dtype), input_precision=PRECISION)   # from dt as stored, as ops' does
    tl.store(DS + off, ds.to(DS.dtype.element_ty), mask=m)


def pw_bwd_fused(s, w1, b1, x, g, dx, dt, ds, block_p=64, warps=4):
    bsz, c, h, w = x.shape
    assert c <= 64 and all(t.stride() == x.stride() for t in (s, g, dx, dt, ds)) and x.stride(2) == w * x.stride(3)
    upcast, precision = dot_precision(x.dtype)
    n_ptiles = triton.cdiv(h * w, block_p)
    _pw_bwd_fused_kernel[(bsz * n_ptiles,)](s, pw_weight(w1, x.dtype), b1, x, g, dx, dt, ds, c, h * w, n_ptiles,
                                            x.stride(0), x.stride(1), x.stride(3), UPCAST=upcast,
                                            PRECISION=precision, BLOCK_P=block_p,
                                            BLOCK_C=max(16, triton.next_power_of_2(c)), num_warps=warps)


def lka_nchw_one_copy(x, p):
    """The LKA forward of NCHW x: one copy in, the gate writes NCHW."""
    xc = x.contiguous(memory_format=torch.channels_last)
    a = dw_conv(xc, p[0], p[1], 1, out=torch.empty_like(xc))
    s = dw_conv(a, p[2], p[3], 3, out=torch.empty_like(xc))
    return pw_gate(s, p[4], p[5], x)


def check():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for c, fmt in ((24, torch.channels_last), (64, torch.contiguous_format)):
            s, x, g = (torch.randn(2, c, 7, 9).to(dtype).contiguous(memory_format=fmt) for _ in range(3))
            w1, b1 = torch.randn(c, c, 1, 1) * c ** -0.5, torch.randn(c)
            ref = pw_gate_backward(s, w1, b1, x, g, *(torch.empty_like(x) for _ in range(3)))
            out = [torch.full_like(x, float("nan")) for _ in range(3)]
            pw_bwd_fused(s, w1, b1, x, g, *out, block_p=32)
            errs = [((o.double() - r.double()).norm() / r.double().norm()).item() for o, r in zip(out, ref)]
            print(f"{dtype} C{c} {fmt}: fused backward vs ops' (dx, dt, ds) rel. difference "
                  + ", ".join(f"{e:.1e}" for e in errs))
            assert max(errs) < 1e-2
        x = torch.randn(2, 16, 11, 13).to(dtype)
        p = lka_params(16, "cpu")
        ref = large_kernel_attention_reference(x.double(), *[t.double() for t in p])
        y = lka_nchw_one_copy(x, p)
        assert y.is_contiguous()
        print(f"{dtype} LKA NCHW, one copy: rel. error {((y.double() - ref).norm() / ref.norm()).item():.1e}")


def bwd(rounds=5):
    torch.manual_seed(0)
    for b, c, sz in [(bb, cc, ss) for bb, cc, ss in BENCH + VAN if cc <= 64]:
        x, s, g = (torch.randn(b, c, sz, sz, device=DEVICE, dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last) for _ in range(3))
        w1, b1 = torch.randn(c, c, 1, 1, device=DEVICE) * c ** -0.5, torch.randn(c, device=DEVICE)
        wq = pw_weight(w1, x.dtype)
        two, one = [torch.empty_like(x) for _ in range(3)], [torch.empty_like(x) for _ in range(3)]
        pw_gate_backward(s, wq, b1, x, g, *two)
        res = {}
        for bp, warps in ((64, 4), (128, 4), (128, 8)):
            pw_bwd_fused(s, wq, b1, x, g, *one, bp, warps)
            err = max(((o.float() - t.float()).norm() / t.float().norm()).item() for o, t in zip(one, two))
            times = [], []
            for _ in range(rounds):
                times[0].append(us(lambda: pw_gate_backward(s, wq, b1, x, g, *two)))
                times[1].append(us(lambda: pw_bwd_fused(s, wq, b1, x, g, *one, bp, warps)))
            res[(bp, warps)] = (statistics.median(times[0]), statistics.median(times[1]), err)
        print(f"gate backward B{b} C{c} {sz}x{sz} CL, us: two launches / fused at (pixels, warps): "
              + "; ".join(f"{k}: {t2:.1f} / {t1:.1f} (diff {e:.1e})" for k, (t2, t1, e) in res.items()), flush=True)


def nchw(rounds=5):
    torch.manual_seed(0)
    for b, c, sz in BENCH:
        x = torch.randn(b, c, sz, sz, device=DEVICE, dtype=torch.bfloat16)
        xcl = x.contiguous(memory_format=torch.channels_last)
        p = lka_params(c, DEVICE)
        ref = ops.large_kernel_attention(x, *p).float()
        err = ((lka_nchw_one_copy(x, p).float() - ref).norm() / ref.norm()).item()
        arms = {"ops NCHW (two copies)": lambda: ops.large_kernel_attention(x, *p),
                "one copy, gate writes NCHW": lambda: lka_nchw_one_copy(x, p),
                "ops channels-last": lambda: ops.large_kernel_attention(xcl, *p)}
        times = {k: [] for k in arms}
        for _ in range(rounds):
            for k, fn in arms.items():
                times[k].append(us(fn))
        print(f"LKA fwd B{b} C{c} {sz}x{sz}, us: " + ", ".join(f"{k} {statistics.median(v):.1f}"
                                                              for k, v in times.items())
              + f" (one copy vs ops rel. difference {err:.1e})", flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    else:
        parts = {"bwd": bwd, "nchw": nchw}
        for part in [a for a in sys.argv[1:] if a in parts] or list(parts):
            parts[part]()
