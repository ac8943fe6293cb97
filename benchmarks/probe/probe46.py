"""Probe (session 18): NA's backward on long windows, this tree's ``ops`` against another copy (``ab.py``),
same process, 5 alternations of do_bench medians, bf16. Times the backward alone (``torch.autograd.grad``
of a kept forward graph) and compares the gradients. The dK/dV kernel finds each key box's query range
per axis; a linear scan took ~K/2 + S steps per program (~2000 on a 2049-key window), binary searches
take log2(K + S).

    python benchmarks/probe/probe46.py <ops copy>
"""
import sys

import torch

import ops
from ab import alternating_medians, load_base  # the script's folder is on sys.path

# (name, q shape [B, *spatial, H, D], kernel_size)
CASES = [("1-D L32768 k2049 H16", (1, 32768, 16, 128), (2049,)),
         ("1-D L8192 k513 B4 H16 D64", (4, 8192, 16, 64), (513,)),
         ("1-D L4096 k257 B8 H8", (8, 4096, 8, 128), (257,)),
         ("1-D L2048 k31 B16 H8", (16, 2048, 8, 128), (31,)),
         ("2-D 64x64 k33 B2 H16", (2, 64, 64, 16, 128), (33, 33)),
         ("NA-2D large 96x96 k17 H24", (1, 96, 96, 24, 128), (17, 17)),
         ("NA-3D video 20x48x80 k7x15x15 H12", (1, 20, 48, 80, 12, 128), (7, 15, 15))]


def main():
    base = load_base(sys.argv[1])
    print("case                               | backward ms base, this (medians of 5 alternations) | this/base | max grad diff")
    for name, shape, ks in CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                   for _ in range(3))
        do = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
        ob = base.neighborhood_attention(q, k, v, kernel_size=ks)
        on = ops.neighborhood_attention(q, k, v, kernel_size=ks)
        fb = lambda: torch.autograd.grad(ob, (q, k, v), do, retain_graph=True)  # noqa: E731
        fn = lambda: torch.autograd.grad(on, (q, k, v), do, retain_graph=True)  # noqa: E731
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(fb(), fn()))
        mb, mn = alternating_medians(fb, fn)
        print(f"{name:34s} | {mb:.4f}, {mn:.4f} | {mn / mb:.3f} | {diff:.2g}", flush=True)


main()
