"""Probe (session 8): GPU time of the depthwise weight gradient (``dw_conv_weight_grad``, 7x7
dilation 3 and 5x5) on VAN-b0/b2's layer shapes at batch 128 (channels-last bf16), the current
kernel against an older version of ``ops/lka/kernels.py`` imported side by side, plus the current
kernel under other (taps per chunk, pixels, warps) launch configurations. Results are compared with the older
version's (max abs difference, fp32 gradients).

    git show <commit>:ops/lka/kernels.py > /tmp/old_lka.py
    python benchmarks/probe/probe20.py /tmp/old_lka.py
"""
import importlib
import os
import shutil
import sys

import torch
from triton.testing import do_bench

import ops.lka.kernels as L

from lka_case import VAN  # the script's folder is on sys.path

VARIANTS = [(1, 64, 4), (8, 32, 4)]   # (KWB, pixels, warps) besides the default: per tap, 8-wide chunks
PKG = os.path.dirname(L.__file__)


def ms(fn):
    return do_bench(fn, warmup=5, rep=30, return_mode="median")


def main():
    shutil.copy(sys.argv[1], os.path.join(PKG, "_probe_old.py"))
    old = importlib.import_module("ops.lka._probe_old")
    base = L._wgrad_config
    torch.manual_seed(0)
    names = "  ".join(f"K{k}P{p}w{w}" for k, p, w in VARIANTS)
    print(f"shape                 | 7x7 d3: old   new  {names} | 5x5: old   new  {names} | max diff")
    for b, c, s in VAN:
        x, g = (torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
                for _ in range(2))
        row, diff = [], 0.0
        for k, d in ((7, 3), (5, 1)):
            ref = old.dw_conv_weight_grad(g, x, (k, k), d)
            new = L.dw_conv_weight_grad(g, x, (k, k), d)
            diff = max(diff, max((a - r).abs().max().item() for a, r in zip(new, ref)))
            row += [ms(lambda: old.dw_conv_weight_grad(g, x, (k, k), d)), ms(lambda: L.dw_conv_weight_grad(g, x, (k, k), d))]
            for kwb, p, w in VARIANTS:
                L._wgrad_config = lambda kw, block_c, hw, kwb=kwb, p=p, w=w: (kwb, p, w)
                row.append(ms(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
                L._wgrad_config = base
        n = 2 + len(VARIANTS)
        print(f"B{b} C{c} {s}x{s}".ljust(22) + "| " + " ".join(f"{v * 1e3:6.0f}" for v in row[:n]) + " | "
              + " ".join(f"{v * 1e3:6.0f}" for v in row[n:]) + f" | {diff:.2e}", flush=True)
    print("(microseconds, do_bench median)")
    os.remove(os.path.join(PKG, "_probe_old.py"))


if __name__ == "__main__":
    main()
