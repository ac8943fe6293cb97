"""Probe (sessions 31-32): two follow-ups of the 1x1 kernel (``_pw_kernel``).

- ``bwd``: on maps of at most 64 channels one [channels, pixels] tile holds every channel, so the
  gate's backward fits one launch: t = W1 @ s + b1, dx = g * t, dt = g * x and ds = W1^T @ dt from
  the tile (``PW_GATE_BWD_DS``), against two launches (dx and dt, then ds re-reading dt), at three
  (pixels, warps) tiles. Saves a launch per LKA backward (eager VAN is bound by its host) and a
  read of dt.
- ``nchw``: the LKA forward on NCHW input: ``ops.large_kernel_attention`` (one copy to
  channels-last, the gate writing NCHW) against a copy each way around the channels-last op
  (~62 us each on B64 C64 56x56, probe75) and the channels-last op.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe77.py [bwd] [nchw]
    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe77.py --check

Session 31 wrote it with its own fused kernel and the one-copy forward spelled out; session 32
ran it (bceb017, `probe-lka-packed-convert-s32-h200-2026-11-30.txt`: one launch 1.1-1.4x, the
NCHW forward 1.13-1.41x) and made both ops' (``PW_GATE_BWD_DS`` with 64-pixel tiles,
``ChainProgram(out_nchw=True)``); the arms now run ops' kernel with its modes and tiles set.
"""
import statistics
import sys

import torch

import ops
from ops.lka import large_kernel_attention_reference
from ops.lka.kernels import PW_GATE_BWD, PW_GATE_BWD_DS, PW_PLAIN, _pw, pw_launch, pw_weight
from lka_case import BENCH, VAN, lka_params, us

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def gate_bwd(s, w1, b1, x, g, dx, dt, ds, fused, block_p=None, warps=None):
    """The gate's backward through ops' kernel: one launch (``fused``, at the given tile) or two.
    w1: [C, C] in x's dtype (pw_weight); every map with x's strides."""
    shape, st = tuple(x.shape), x.stride()
    grid, scalars, meta = pw_launch(shape, x.dtype, PW_GATE_BWD_DS if fused else PW_GATE_BWD, (st,) * 5)
    if fused and block_p is not None:
        n_ptiles = -(-(shape[2] * shape[3]) // block_p)
        grid, scalars = (shape[0] * n_ptiles,), (*scalars[:-2], n_ptiles, 1)
        meta = {**meta, "BLOCK_P": block_p, "num_warps": warps}
    _pw[grid](s, w1, b1, x, g, dx, dt, ds, *scalars, **meta)
    if not fused:
        grid, scalars, meta = pw_launch(shape, x.dtype, PW_PLAIN, (st,) * 2)
        _pw[grid](dt, w1, b1, dt, dt, ds, ds, ds, *scalars, **meta)


def lka_nchw_two_copies(x, p):
    return ops.large_kernel_attention(x.contiguous(memory_format=torch.channels_last), *p).contiguous()


def check():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for c, fmt in ((24, torch.channels_last), (64, torch.contiguous_format)):
            s, x, g = (torch.randn(2, c, 7, 9).to(dtype).contiguous(memory_format=fmt) for _ in range(3))
            w1, b1 = pw_weight(torch.randn(c, c, 1, 1) * c ** -0.5, dtype), torch.randn(c)
            two, one = [torch.empty_like(x) for _ in range(3)], [torch.full_like(x, float("nan")) for _ in range(3)]
            gate_bwd(s, w1, b1, x, g, *two, fused=False)
            gate_bwd(s, w1, b1, x, g, *one, fused=True, block_p=32, warps=4)
            errs = [((o.double() - r.double()).norm() / r.double().norm()).item() for o, r in zip(one, two)]
            print(f"{dtype} C{c} {fmt}: one launch vs two (dx, dt, ds) rel. difference "
                  + ", ".join(f"{e:.1e}" for e in errs))
            assert max(errs) < 1e-2
        x = torch.randn(2, 16, 11, 13).to(dtype)
        p = lka_params(16, "cpu")
        ref = large_kernel_attention_reference(x.double(), *[t.double() for t in p])
        y = ops.large_kernel_attention(x, *p)
        assert y.is_contiguous()
        print(f"{dtype} LKA NCHW: rel. error {((y.double() - ref).norm() / ref.norm()).item():.1e}")


def bwd(rounds=5):
    torch.manual_seed(0)
    for b, c, sz in [(bb, cc, ss) for bb, cc, ss in BENCH + VAN if cc <= 64]:
        x, s, g = (torch.randn(b, c, sz, sz, device=DEVICE, dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last) for _ in range(3))
        wq = pw_weight(torch.randn(c, c, 1, 1, device=DEVICE) * c ** -0.5, x.dtype)
        b1 = torch.randn(c, device=DEVICE)
        two, one = [torch.empty_like(x) for _ in range(3)], [torch.empty_like(x) for _ in range(3)]
        gate_bwd(s, wq, b1, x, g, *two, fused=False)
        res = {}
        for bp, warps in ((64, 4), (128, 4), (128, 8)):
            gate_bwd(s, wq, b1, x, g, *one, fused=True, block_p=bp, warps=warps)
            err = max(((o.float() - t.float()).norm() / t.float().norm()).item() for o, t in zip(one, two))
            times = [], []
            for _ in range(rounds):
                times[0].append(us(lambda: gate_bwd(s, wq, b1, x, g, *two, fused=False)))
                times[1].append(us(lambda: gate_bwd(s, wq, b1, x, g, *one, fused=True, block_p=bp, warps=warps)))
            res[(bp, warps)] = (statistics.median(times[0]), statistics.median(times[1]), err)
        print(f"gate backward B{b} C{c} {sz}x{sz} CL, us: two launches / fused at (pixels, warps): "
              + "; ".join(f"{k}: {t2:.1f} / {t1:.1f} (diff {e:.1e})" for k, (t2, t1, e) in res.items()), flush=True)


def nchw(rounds=5):
    torch.manual_seed(0)
    for b, c, sz in BENCH:
        x = torch.randn(b, c, sz, sz, device=DEVICE, dtype=torch.bfloat16)
        xcl = x.contiguous(memory_format=torch.channels_last)
        p = lka_params(c, DEVICE)
        ref = lka_nchw_two_copies(x, p).float()
        err = ((ops.large_kernel_attention(x, *p).float() - ref).norm() / ref.norm()).item()
        arms = {"NCHW, a copy each way": lambda: lka_nchw_two_copies(x, p),
                "NCHW, ops (one copy, gate writes NCHW)": lambda: ops.large_kernel_attention(x, *p),
                "ops channels-last": lambda: ops.large_kernel_attention(xcl, *p)}
        times = {k: [] for k in arms}
        for _ in range(rounds):
            for k, fn in arms.items():
                times[k].append(us(fn))
        print(f"LKA fwd B{b} C{c} {sz}x{sz}, us: " + ", ".join(f"{k} {statistics.median(v):.1f}"
                                                              for k, v in times.items())
              + f" (one copy vs two rel. difference {err:.1e})", flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    else:
        parts = {"bwd": bwd, "nchw": nchw}
        for part in [a for a in sys.argv[1:] if a in parts] or list(parts):
            parts[part]()
