"""Probe (session 17): the forward's 32-key boxes for 1-D/2-D problems above head dim 64 (fd528f0) were
measured on NA-2D large and GNA-2D only. This times the forward on other 1-D/2-D head-dim-128 shapes
whose plan the rule changes (and two it does not, as controls), this tree's ``ops`` against another copy
(``ab.py``; e.g. 20f743d's, before the rule), same process, 5 alternations of do_bench medians, bf16,
outputs compared (the key boxes change the summation order, so they differ in the last bits).

    git archive 20f743d ops | tar -x -C /tmp/base && python benchmarks/probe/probe45.py /tmp/base/ops
"""
import sys

import torch

import ops
from ab import alternating_medians, load_base  # the script's folder is on sys.path

# (name, q shape [B, *spatial, H, D], kernel_size)
CASES = [("1-D L4096 k257 B8 H8", (8, 4096, 8, 128), (257,)),
         ("1-D L2048 k31 B16 H8", (16, 2048, 8, 128), (31,)),
         ("1-D L32768 k2049 H16 (control)", (1, 32768, 16, 128), (2049,)),
         ("2-D 64x64 k33 B2 H16", (2, 64, 64, 16, 128), (33, 33)),
         ("2-D 48x48 k7 B8 H8", (8, 48, 48, 8, 128), (7, 7)),
         ("2-D 128x128 k9 B2 H8", (2, 128, 128, 8, 128), (9, 9)),
         ("2-D 32x32 k31 B8 H8", (8, 32, 32, 8, 128), (31, 31)),
         ("2-D 56x56 k7 B64 H4 D64 (control)", (64, 56, 56, 4, 64), (7, 7))]


def main():
    base = load_base(sys.argv[1])
    print("case                               | forward ms base, this (medians of 5 alternations) | this/base | max diff")
    for name, shape, ks in CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        fb = lambda: base.neighborhood_attention(q, k, v, kernel_size=ks)  # noqa: E731
        fn = lambda: ops.neighborhood_attention(q, k, v, kernel_size=ks)  # noqa: E731
        diff = (fb().float() - fn().float()).abs().max().item()
        mb, mn = alternating_medians(fb, fn)
        print(f"{name:34s} | {mb:.4f}, {mn:.4f} | {mn / mb:.3f} | {diff:.2g}", flush=True)


main()
