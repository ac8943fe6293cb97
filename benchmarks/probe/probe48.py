"""Probe (session 19): the backward alone (``torch.autograd.grad`` of a kept forward graph), this
tree's ``ops`` against another copy (``ab.py``), same process, 5 alternations of do_bench medians,
bf16: NA's bench cases and a long 1-D window, and BRA's four bench shapes (routing as the op does
it; also their forward, inference). Session 19's changes: the dQ kernels store each query's (log2
LSE, delta) as one 8-byte pair, which the dK/dV kernels load with one vector access; the
block-sparse core's tile grid is constexpr (probe44 / probe47 count the loops offline).

    python benchmarks/probe/probe48.py <ops copy> [na|bra|topk]

``topk`` times the region routing alone (``region_topk``: region means and top-k) on the BRA shapes,
replayed from CUDA graphs (an eager call is about as long on the CPU as on the GPU).
"""
import importlib
import statistics
import sys

import torch
from triton.testing import do_bench_cudagraph

import ops
from ab import alternating_medians, load_base  # the script's folder is on sys.path
from tasks.bench.suites.bra import GPU_CASES as SHAPES  # (batch, size, channels, n_win, topk); head dim 32

# (name, q shape [B, *spatial, H, D], kernel_size, stride)
NA_CASES = [("NA-2D large", (1, 96, 96, 24, 128), (17, 17), (1, 1)),
            ("NA-2D backbone", (64, 56, 56, 4, 32), (7, 7), (1, 1)),
            ("NA-3D video", (1, 20, 48, 80, 12, 128), (7, 15, 15), (1, 1, 1)),
            ("GNA-2D", (1, 96, 96, 24, 128), (16, 16), (8, 16)),
            ("GNA-3D", (1, 20, 48, 80, 12, 128), (8, 16, 16), (2, 8, 8)),
            ("1-D L32768 k2049 H16", (1, 32768, 16, 128), (2049,), (1,))]


def compare(name, fb, fn, graphs=False):
    """``graphs``: time replays of CUDA graphs (GPU work alone; the calls are warmed up first)."""
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(fb(), fn()))
    if graphs:
        tb = [do_bench_cudagraph(fb, rep=50, return_mode="median") for _ in range(3)]
        tn = [do_bench_cudagraph(fn, rep=50, return_mode="median") for _ in range(3)]
        mb, mn = statistics.median(tb), statistics.median(tn)
    else:
        mb, mn = alternating_medians(fb, fn)
    print(f"{name:34s} | {mb:.4f}, {mn:.4f} | {mn / mb:.3f} | {diff:.2g}", flush=True)


def main():
    base = load_base(sys.argv[1])
    which = sys.argv[2:] or ["na", "bra", "topk"]
    print("case                               | backward ms base, this (medians of 5 alternations) | this/base"
          " | max grad diff")
    g = torch.Generator(device="cuda").manual_seed(0)
    if "na" in which:
        for name, shape, ks, st in NA_CASES:
            q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                       for _ in range(3))
            do = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
            ob = base.neighborhood_attention(q, k, v, kernel_size=ks, stride=st)
            on = ops.neighborhood_attention(q, k, v, kernel_size=ks, stride=st)
            compare(name, lambda: torch.autograd.grad(ob, (q, k, v), do, retain_graph=True),
                    lambda: torch.autograd.grad(on, (q, k, v), do, retain_graph=True))
    if "bra" in which:
        for batch, size, channels, n_win, topk in SHAPES:
            shape = (batch, size, size, channels)
            q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                       for _ in range(3))
            do = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
            args = dict(scale=channels ** -0.5, num_heads=channels // 32)
            ob = base.routing_attention(q, k, v, n_win, topk, **args)
            on = ops.routing_attention(q, k, v, n_win, topk, **args)
            with torch.no_grad():
                compare(f"BRA forward B{batch} {size}x{size} C{channels} topk{topk}",
                        lambda: (base.routing_attention(q, k, v, n_win, topk, **args),),
                        lambda: (ops.routing_attention(q, k, v, n_win, topk, **args),))
            compare(f"BRA B{batch} {size}x{size} C{channels} topk{topk}",
                    lambda: torch.autograd.grad(ob, (q, k, v), do, retain_graph=True),
                    lambda: torch.autograd.grad(on, (q, k, v), do, retain_graph=True))
    if "topk" in which:
        rb = importlib.import_module(base.__name__ + ".routing.kernels").region_topk
        rn = importlib.import_module("ops.routing.kernels").region_topk
        for batch, size, channels, n_win, topk in SHAPES:
            q, k = (torch.randn(batch, size, size, channels, device="cuda", dtype=torch.bfloat16, generator=g)
                    for _ in range(2))
            scale = channels ** -0.5
            compare(f"region_topk B{batch} {size}x{size} C{channels} topk{topk}",
                    lambda: (rb(q, k, (n_win, n_win), topk, scale),),
                    lambda: (rn(q, k, (n_win, n_win), topk, scale),), graphs=True)


main()
