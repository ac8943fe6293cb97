"""Probe (session 6): region top-k kernel of BRA's routing under launch variants.

``_region_topk_kernel`` ranks all R key regions for one query region per program by repeated
arg-max (topk rounds, a serial chain). This times the kernel alone (triton.testing.do_bench,
GPU time) on the bench's four shapes for (num_warps, channel block) variants, to pick the
launch configuration. Usage: python benchmarks/probe/probe13.py
"""
import torch
import triton

from ops.common.tuning import next_power_of_2
from ops.routing.kernels import _region_topk_kernel

from bra_case import SHAPES  # the script's folder is on sys.path

for B, S, C, n_win, topk in SHAPES:
    R = n_win * n_win
    means = torch.randn(2, B, R, C, device="cuda")
    base = None
    block_r = max(next_power_of_2(R), 16)
    line = []
    for warps in (4, 2, 1):   # the first variant (the current launch) is the reference result
        for elems in (4096, 2048, 1024):
            block_c = min(max(next_power_of_2(C), 16), max(elems // block_r, 16))
            out = torch.empty(B, R, topk, device="cuda", dtype=torch.int32)

            def call():
                _region_topk_kernel[(B * R,)](means, out, R, C, B * R * C, topk, C ** -0.5,
                                              BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps)
            call()
            base = out.clone() if base is None else base
            ms = triton.testing.do_bench(call, warmup=10, rep=50)
            line.append(f"w{warps} c{block_c}: {ms * 1e3:6.1f} us{'' if torch.equal(out, base) else ' (differs)'}")
    print(f"-- B{B} {S}x{S} C{C} topk{topk}, R={R}:", flush=True)
    for item in line:
        print("   ", item, flush=True)
