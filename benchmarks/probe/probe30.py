"""Probe (session 10, for the next GPU run): launch plans of BRA's region-mean kernel
(``ops.routing.kernels._region_mean_kernel``). probe19 measured it at 28-36 us on the bench
shapes (B64 28x28 C128: 25.7 MB of q and k, ~4x its time at the copy rate): small programs
(2048 elements per tensor) whose load latency is not hidden. This times the kernel alone under
other plans: elements per program per tensor (2048 now, 4096, 8192), channel block (64 now, 128)
and warps (4 now, 8), each checked against the current plan's means.

    python benchmarks/probe/probe30.py
"""
import torch

import ops.routing.kernels as RK

from bra_case import SHAPES  # the script's folder is on sys.path
from lka_case import us


def main():
    variants = [(2048, 64, 4), (4096, 64, 4), (8192, 64, 8), (4096, 128, 4), (8192, 128, 8)]
    print("shape                   | " + " ".join(f"{e}/C{c}/w{w}".rjust(13) for e, c, w in variants) + " | max diff")
    for B, S, C, nw, _ in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        qkv = torch.randn(B, S, S, 3 * C, device="cuda", dtype=torch.bfloat16, generator=g)
        q, k = qkv[..., :C], qkv[..., C:2 * C]   # the model's layout: channel slices of one projection
        R = nw * nw
        cells, ref, diff = [], None, 0.0
        for elems, bc, warps in variants:
            grid, args, meta = RK._mean_plan(B, S, S, C, nw, nw, elems, bc, warps)
            means = torch.empty((2, B, R, C), device="cuda", dtype=torch.float32)

            def run():
                RK._region_mean[grid](q, k, means, *args, *q.stride(), *k.stride(), **meta)
            run()
            if ref is None:
                ref = means.clone()
            diff = max(diff, (means - ref).abs().max().item())
            cells.append(us(run))
        print(f"B{B} {S}x{S} C{C} n_win {nw}".ljust(24) + "| " + " ".join(f"{v:13.1f}" for v in cells)
              + f" | {diff:.1e}", flush=True)
    print("(microseconds, do_bench median; the first column is the current plan)")


if __name__ == "__main__":
    main()
