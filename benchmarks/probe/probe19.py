"""Probe (session 8): why the eager BRA forward of B64 28x28 C128 top-4 took 0.146 ms in the bench
against 0.094 ms replayed from a CUDA graph, while B64 56x56 C64 top-1's eager row equals its graph
(host cost per call is ~85 us on both, probe18).

Per shape: ``do_bench`` medians of the eager call and of its CUDA-graph replay, three times
interleaved; then a ``torch.profiler`` trace of 20 eager calls: per kernel name its count and mean
GPU time, the mean gap between consecutive kernels on the GPU, and the CPU ops that take longest.

    python benchmarks/probe/probe19.py
"""
import torch
from triton.testing import do_bench

import ops
from tasks.bench.suites.peers import CUDAGraphed

from bra_case import SHAPES  # the script's folder is on sys.path
from profiling import print_kernel_trace

for B, S, C, nw, topk in SHAPES[:2]:
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, S, S, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    fwd = lambda: ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32)  # noqa: E731
    graph = CUDAGraphed(fwd)
    rows = []
    for _ in range(3):
        rows.append((do_bench(fwd, warmup=10, rep=60, return_mode="median"),
                     do_bench(graph, warmup=10, rep=60, return_mode="median")))
    print(f"B{B} {S}x{S} C{C} topk{topk}: eager/graph ms " + ", ".join(f"{e:.4f}/{gr:.4f}" for e, gr in rows),
          flush=True)
    print_kernel_trace(fwd, 20)
