"""Probe (session 39): what the NA forward's per-element window test costs, and the walk's ceiling.

Session 38's Nsight Compute run put NA-2D large's busiest pipe at the ALU (35%, the window test)
with issue slots busy 49% of cycles. Three copies of ``ops`` (``ab.load_base``) in one process:

- ``nomask``: the forward's scores are never masked (wrong outputs where a window does not hold the
  whole walk): the most any cheaper window test could give, and, with windows as large as the map
  (every key in every window, so the outputs are right), the rate of the walk itself: dense short
  walks (576 keys, NA-2D large's union) and long ones (9216 keys), against cuDNN on the same
  problems.
- ``bias``: the window test moved onto the tensor cores. A key block's keys are a box, so whether
  key (j0, j1, j2) is in query i's window is, per axis, a test of one of the box's B0 + B1 + B2
  rows / columns: a [queries, E] matrix of 0 / -1e30 (one column per tested axis row, E = 16 or
  32) times a constant [E, keys] one-hot matrix, accumulated into the scores by a second
  ``tl.dot`` (bf16 operands, K = E) instead of a [queries, keys] compare-and-select. A row whose
  first blocks are all masked takes a finite max (-1e30 * scale) and p = 1 there, which the next
  block with a key in the window rescales by exp2(-1e29) = 0; every query has a key in its window.

    python benchmarks/probe/probe91.py          # GPU: ops / bias / nomask on the bench's masked
                                                # cases, then the dense ceilings
    TRITON_INTERPRET=1 python benchmarks/probe/probe91.py check   # bias copy vs ops (CPU, fp32/fp16)
    python benchmarks/probe/probe91.py check    # the same on the GPU (bf16/fp16/fp32)
"""
import importlib
import math
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import ops
import ops.neighborhood.kernels as K
from ab import load_base  # the script's folder is on sys.path

KERNELS = "neighborhood/kernels.py"

NOMASK = {KERNELS: {
    '    if MASKED:\n        s = tl.where(mask, s, float("-inf"))\n    return _fwd_update(':
    '    return _fwd_update(',
}}

BIAS_HELPERS = '''@triton.jit
def _bias_keys(c0, c1, c2, BN1: tl.constexpr, BN2: tl.constexpr, EB: tl.constexpr,
               SKIP0: tl.constexpr, SKIP1: tl.constexpr, DT: tl.constexpr):
    """[EB, keys] one-hot: key n's row on each tested axis (columns: last axis, then 1, then 0)."""
    e = tl.arange(0, EB)[:, None]
    hot = e == c2[None, :]
    if not SKIP1:
        hot = hot | (e == BN2 + c1[None, :])
    if not SKIP0:
        hot = hot | (e == BN2 + BN1 + c0[None, :])
    return hot.to(DT)


@triton.jit
def _bias_rows(a0, a1, a2, lo0, hi0, lo1, hi1, lo2, hi2, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
               C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
               BN0: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr, EB: tl.constexpr,
               SKIP0: tl.constexpr, SKIP1: tl.constexpr, DT: tl.constexpr):
    """[queries, EB]: 0 where the block's row e of its axis lies in the query's window, -1e30 elsewhere."""
    e = tl.arange(0, EB)[None, :]
    ok = (e >= BN2) | _axis_in(lo2[:, None], hi2[:, None], a2 + e, K2, C2)
    if not SKIP1:
        ok = ok & ((e < BN2) | (e >= BN2 + BN1) | _axis_in(lo1[:, None], hi1[:, None], a1 + (e - BN2), K1, C1))
    if not SKIP0:
        ok = ok & ((e < BN2 + BN1) | (e >= BN2 + BN1 + BN0)
                   | _axis_in(lo0[:, None], hi0[:, None], a0 + (e - BN2 - BN1), K0, C0))
    return tl.where(ok, 0.0, -1e30).to(DT)


@triton.jit
def _fwd_update('''

BIAS = {KERNELS: {
    "@triton.jit\ndef _fwd_update(": BIAS_HELPERS,
    "    w0, w1, w2 = _walk_start()\n    for it in range(0, n_blocks):\n        kt, v, mask = _walk_step(":
    "    NB: tl.constexpr = BN2 + (0 if SKIP1 else BN1) + (0 if SKIP0 else BN0)\n"
    "    EB: tl.constexpr = 16 if NB <= 16 else (32 if NB <= 32 else (64 if NB <= 64 else 128))\n"
    + ("    BDT: tl.constexpr = tl.float32\n" if os.environ.get("TRITON_INTERPRET") == "1" else
       "    BDT: tl.constexpr = tl.float32 if PRECISION == 'ieee' else tl.bfloat16\n") +
    "    kx = _bias_keys(c0, c1, c2, BN1, BN2, EB, SKIP0, SKIP1, BDT)\n"
    "    w0, w1, w2 = _walk_start()\n    for it in range(0, n_blocks):\n        kt, v, mask = _walk_step(",
    "            acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, MASK_MODE > 0, PRECISION)":
    "            if MASK_MODE == 2:\n"
    "                s = tl.dot(q, kt, input_precision=PRECISION)\n"
    "                qx = _bias_rows(u_lo0 + w0 * BN0, u_lo1 + w1 * BN1, u_lo2 + w2 * BN2, lo0, hi0, lo1, hi1, lo2, hi2,\n"
    "                                K0, K1, K2, C0, C1, C2, BN0, BN1, BN2, EB, SKIP0, SKIP1, BDT)\n"
    "                s = tl.dot(qx, kx, acc=s, input_precision=PRECISION)\n"
    "                acc, m_i, l_i = _fwd_update(acc, m_i, l_i, s, v, qk_scale, PRECISION)\n"
    "            else:\n"
    "                acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, MASK_MODE > 0, PRECISION)",
}}

# (name, q shape [B, *spatial, H, D], kernel, dilation, causal): masked forwards (MASK_MODE 2)
CASES = [("NA-2D large 96x96 k17 H24 D128", (1, 96, 96, 24, 128), (17, 17), (1, 1), None),
         ("NA-2D backbone B64 56x56 k7 H4 D32", (64, 56, 56, 4, 32), (7, 7), (1, 1), None),
         ("NA-3D video 20x48x80 k7x15x15 H12 D128", (1, 20, 48, 80, 12, 128), (7, 15, 15), (1, 1, 1), None),
         ("2-D 64x64 k33 B2 H16 D128", (2, 64, 64, 16, 128), (33, 33), (1, 1), None),
         ("2-D 64x64 k13 d2 B4 H8 D64", (4, 64, 64, 8, 64), (13, 13), (2, 2), None),
         ("3-D 16x32x32 k5x9x9 causal t B2 H16 D128", (2, 16, 32, 32, 16, 128), (5, 9, 9), (1, 1, 1),
          (True, False, False))]

# dense walks through the NA kernel (window = map): (name, q shape, kernel)
DENSE = [("dense short: B16 24x24 (576 keys) H24 D128", (16, 24, 24, 24, 128), (24, 24)),
         ("dense long: B1 96x96 (9216 keys) H24 D128", (1, 96, 96, 24, 128), (96, 96))]


def _args(shape, ks, dil, causal):
    n = len(ks)
    return ks, dil, (1,) * n, causal or (False,) * n


def _alternate(fns: dict, rounds: int = 5) -> dict:
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(do_bench(fn, warmup=10, rep=100))
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _kernels(edits, package):
    """The NA kernels module of a copy of this tree's ops with ``edits``, loaded as ``package``."""
    load_base(str(Path(ops.__file__).parent), edits, package)
    return importlib.import_module(f"{package}.neighborhood.kernels")


def main():
    copies = {"ops": K, "bias": _kernels(BIAS, "ops_bias"), "nomask": _kernels(NOMASK, "ops_nomask")}
    print("case | walk TFLOP/s (ops) | ops us | bias us | nomask us | bias/ops | nomask/ops | "
          "bias max diff", flush=True)
    for name, shape, ks, dil, causal in CASES:
        args = _args(shape, ks, dil, causal)
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        scale = shape[-1] ** -0.5
        fns = {c: (lambda m=m: m.na_forward(q, k, v, *args, scale)[0]) for c, m in copies.items()}
        ref = fns["ops"]().float()
        diff = (fns["bias"]().float() - ref).abs().max().item()
        t = _alternate(fns)
        plan = K._plan(shape[1:-2], len(ks), *args, shape[-1], "fwd")
        window = K._padded_window(ks, (1,) * len(ks), args[3], len(ks))
        walked = K.walk_products(plan[2], *window, plan[3], plan[4]) * math.prod(dil)
        flops = 4 * shape[0] * shape[-2] * walked * shape[-1]
        print(f"{name} | {flops / t['ops'] * 1e-6:.0f} | {t['ops']:.1f} | {t['bias']:.1f} | {t['nomask']:.1f} | "
              f"{t['bias'] / t['ops']:.3f} | {t['nomask'] / t['ops']:.3f} | {diff:.2g}", flush=True)
    print("\ndense walk | NA nomask us | cuDNN us | flash us | NA TFLOP/s | cuDNN TFLOP/s | max diff vs cuDNN",
          flush=True)
    for name, shape, ks in DENSE:
        args = _args(shape, ks, (1,) * len(ks), None)
        g = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        b, h, d = shape[0], shape[-2], shape[-1]
        qh, kh, vh = (t.reshape(b, -1, h, d).transpose(1, 2) for t in (q, k, v))
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa(backend):
            def run():
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qh, kh, vh)
            return run
        fns = {"na": lambda: copies["nomask"].na_forward(q, k, v, *args, d ** -0.5)[0],
               "cudnn": sdpa(SDPBackend.CUDNN_ATTENTION), "flash": sdpa(SDPBackend.FLASH_ATTENTION)}
        out = fns["na"]().float().reshape(b, -1, h, d)
        diff = (out - fns["cudnn"]().float().transpose(1, 2)).abs().max().item()
        t = _alternate(fns, rounds=3)
        n = math.prod(shape[1:-2])
        flops = 4 * b * h * n * n * d
        print(f"{name} | {t['na']:.1f} | {t['cudnn']:.1f} | {t['flash']:.1f} | {flops / t['na'] * 1e-6:.0f} | "
              f"{flops / t['cudnn'] * 1e-6:.0f} | {diff:.2g}", flush=True)


def check():
    """The bias copy against ops (same boxes), poisoned outputs, on small random problems."""
    cpu = not torch.cuda.is_available()
    dev = "cpu" if cpu else "cuda"
    bias = _kernels(BIAS, "ops_bias")
    cases = [((1, 13, 11, 2, 16), (5, 3), (1, 2), None), ((2, 9, 3, 8), (9,), (1,), None),
             ((1, 5, 6, 7, 2, 16), (3, 5, 3), (1, 1, 2), (True, False, False)),
             ((1, 12, 10, 2, 32), (4, 6), (2, 1), (False, True))]
    if not cpu:
        cases += [((1, 40, 36, 4, 128), (17, 9), (1, 2), None), ((2, 6, 20, 24, 2, 128), (3, 7, 9), (1, 1, 1), None),
                  ((8, 28, 28, 4, 32), (7, 7), (1, 1), None), ((1, 8, 24, 24, 2, 64), (5, 7, 7), (1, 1, 1), (True, False, False))]
    dtypes = [torch.float32, torch.float16] + ([] if cpu else [torch.bfloat16])
    worst = 0.0
    for shape, ks, dil, causal in cases:
        args = _args(shape, ks, dil, causal)
        for dtype in dtypes:
            q, k, v = (torch.randn(shape, device=dev, dtype=torch.float32).to(dtype) for _ in range(3))
            outs = []
            for m in (K, bias):
                o = torch.full(shape, float("nan"), device=dev, dtype=dtype)
                lse = torch.full(shape[:-1], float("nan"), device=dev, dtype=torch.float32)
                m.na_forward(q, k, v, *args, shape[-1] ** -0.5, out=o, lse=lse)
                outs.append((o.float(), lse))
            d_o = (outs[0][0] - outs[1][0]).abs().max().item()
            d_l = (outs[0][1] - outs[1][1]).abs().max().item()
            finite = all(torch.isfinite(t).all().item() for t in outs[1])
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            worst = max(worst, d_o if finite else math.inf)
            print(f"{shape} k{ks} d{dil} causal {causal} {dtype}: out diff {d_o:.2g}, lse diff {d_l:.2g}, "
                  f"finite {finite} -> {'ok' if finite and d_o <= tol and d_l <= tol else 'FAIL'}", flush=True)
    print(f"worst {worst:.2g}")


if __name__ == "__main__":
    check() if sys.argv[1:] == ["check"] else main()
