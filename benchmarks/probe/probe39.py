"""Probe (session 15): do the flat grid and the int64 batch index cost NA time? This tree's
``ops`` against another copy (``ab.py``), same process, on the bench's NA cases: forward, and
forward+backward (``--backward``), optionally only the cases named; 5 alternations of do_bench medians (bf16, the bench's kernel
sizes and strides), and the outputs (and gradients) of both copies compared bit for bit.

    git archive <commit> ops | tar -x -C /tmp/base && python benchmarks/probe/probe39.py /tmp/base/ops
"""
import sys

import torch

import ops
from ab import alternating_medians, load_base  # the script's folder is on sys.path

# (name, q shape [B, *spatial, H, D], kernel_size, stride)
CASES = [("NA-2D large", (1, 96, 96, 24, 128), (17, 17), (1, 1)),
         ("NA-2D backbone", (64, 56, 56, 4, 32), (7, 7), (1, 1)),
         ("NA-3D video", (1, 20, 48, 80, 12, 128), (7, 15, 15), (1, 1, 1)),
         ("GNA-2D", (1, 96, 96, 24, 128), (16, 16), (8, 16)),
         ("GNA-3D", (1, 20, 48, 80, 12, 128), (8, 16, 16), (2, 8, 8))]


def main():
    base = load_base(sys.argv[1])
    backward = "--backward" in sys.argv
    only = [a for a in sys.argv[2:] if not a.startswith("--")]   # case names to run (default: all)
    what = "forward+backward" if backward else "forward"
    print(f"case            | {what} ms base, this (medians of 5 alternations) | this/base | results equal")
    for name, shape, ks, st in CASES:
        if only and name not in only:
            continue
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, go = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        if backward:
            q, k, v = (t.requires_grad_() for t in (q, k, v))

        def run(op):
            out = op(q, k, v, kernel_size=ks, stride=st)
            return torch.autograd.grad(out, (q, k, v), go) if backward else (out,)

        fb = lambda: run(base.neighborhood_attention)  # noqa: E731
        fn = lambda: run(ops.neighborhood_attention)  # noqa: E731
        same = all(torch.equal(a, b) for a, b in zip(fb(), fn()))
        mb, mn = alternating_medians(fb, fn)
        print(f"{name:15s} | {mb:.4f}, {mn:.4f} | {mn / mb:.3f} | {same}", flush=True)


main()
