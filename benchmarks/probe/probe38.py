"""Probe (session 14): persistent NA forward programs for GNA's short walks.

GNA-2D's forward (window 16x16, stride 8x16: every 64-query box walks the same 4 key blocks)
ran at 0.131 ms against a 53 us memory floor: each program spends most of its time loading its
first blocks. ``_na_fwd_kernel``'s PERSIST mode runs a grid of a few programs per SM that loop
over the boxes in one flattened loop, so the next box's loads overlap the current one's work.
This times the bench's GNA forward cases (bf16) with one program per box and persistent at
1-4 programs per SM (do_bench median), and checks the outputs against the non-persistent ones.

    PYTHONPATH=. python benchmarks/probe/probe38.py
"""
import sys

import torch
from triton.testing import do_bench

import ops.neighborhood.kernels as K

# (name, q shape [B, *spatial, H, D], kernel, stride)
CASES = [("GNA-2D", (1, 96, 96, 24, 128), (16, 16), (8, 16)),
         ("GNA-3D", (1, 20, 48, 80, 12, 128), (8, 16, 16), (2, 8, 8))]


def run(shape, kernel, stride, persist, per_sm=2, max_blocks=K.PERSIST_MAX_BLOCKS):
    K.PERSIST_PROGRAMS_PER_SM, K.PERSIST_MAX_BLOCKS = per_sm, max_blocks
    K._fwd_launch.cache_clear()
    saved = K._persistent
    if not persist:
        K._persistent = lambda *a: False
    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        rank = len(shape) - 3
        args = (kernel, (1,) * rank, stride, (False,) * rank, shape[-1] ** -0.5)
        out, _ = K.na_forward(q, k, v, *args)
        grid, _, meta = K._fwd_launch(tuple(q.shape), shape[-2], shape[-1], *args[:4], 0, q.dtype, args[4], None)
        ms = do_bench(lambda: K.na_forward(q, k, v, *args), warmup=25, rep=200, return_mode="median")
        return ms, out, grid, meta["PERSIST"]
    finally:
        K._persistent = saved


def main():
    only = sys.argv[1:] or [c[0] for c in CASES]
    for name, shape, kernel, stride in CASES:
        if name not in only:
            continue
        base_ms, base_out, grid, _ = run(shape, kernel, stride, False)
        print(f"{name}: one program per box: {base_ms * 1e3:7.1f} us (grid {grid})", flush=True)
        for per_sm in (1, 2, 3, 4):
            ms, out, grid, on = run(shape, kernel, stride, True, per_sm, max_blocks=64)
            diff = (out.float() - base_out.float()).abs().max().item()
            print(f"{name}: persistent {per_sm}/SM: {ms * 1e3:7.1f} us (grid {grid}, PERSIST {on}, "
                  f"max diff {diff:.1e}) {'WIN' if ms < base_ms else 'LOSS'}", flush=True)


main()
