"""Probe (session 38): is the NA forward bound by L2 traffic? Every walked key box loads its K and
V tile from L2 (TMA loads bypass L1), so a 64-row query box that walks 1.94x the needed products
on NA-2D large moves ~1.0 GB from L2 per call (0.204 ms: ~4.9 TB/s), and NA-3D video's walk
21.7 GB (3.53 ms: ~6.1 TB/s). 128-row query boxes walk more products (large 2.37x, video 2.11x)
but move ~40% fewer bytes (0.61 / 12.3 GB).

    python benchmarks/probe/probe89.py sweep [case ...]   # forward time per (query box, key box)
    python benchmarks/probe/probe89.py grid [case ...]    # the same over 64/128 query rows x 32/64/128
                                                         # keys, the two boxes of fewest products each
    ncu --clock-control none --profile-from-start off -k regex:_na_fwd_kernel --section SpeedOfLight \
        --section MemoryWorkloadAnalysis python benchmarks/probe/probe89.py ncu [case ...]

``sweep``: the plan's boxes first, then the alternatives, each through ``na_forward`` (autotuned
warps/stages), medians of 3 do_bench runs, bf16, outputs compared with the plan's. ``ncu``: one
profiled forward per (case, boxes) after warm-up (cudaProfilerStart/Stop around it).
"""
import math
import statistics
import sys

import torch
from triton.testing import do_bench

import ops.neighborhood.kernels as K
import ops.neighborhood.tiling as tiling

# name: (q shape [B, *spatial, H, D], kernel, stride, alternative (query box, key box) over padded axes)
CASES = {
    "NA-2D large": ((1, 96, 96, 24, 128), (17, 17), (1, 1),
                    [((1, 8, 16), (1, 4, 8)), ((1, 16, 8), (1, 8, 4)), ((1, 8, 16), (1, 8, 8)),
                     ((1, 16, 8), (1, 8, 8)), ((1, 8, 16), (1, 4, 16))]),
    "NA-3D video": ((1, 20, 48, 80, 12, 128), (7, 15, 15), (1, 1, 1),
                    [((2, 8, 8), (8, 2, 2)), ((2, 8, 8), (1, 2, 16)), ((2, 8, 8), (8, 8, 1)),
                     ((4, 8, 4), (2, 8, 2)), ((2, 8, 8), (8, 8, 2))]),
    "GNA-3D": ((1, 20, 48, 80, 12, 128), (8, 16, 16), (2, 8, 8), []),
}
NCU = {"NA-2D large": [None, ((1, 8, 16), (1, 4, 8))], "NA-3D video": [None, ((2, 8, 8), (8, 2, 2))],
       "GNA-3D": [None]}


def inputs(shape):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3)]


def forward(q, k, v, ks, st, boxes):
    n = len(ks)
    return lambda: K.na_forward(q, k, v, ks, (1,) * n, st, (False,) * n, q.shape[-1] ** -0.5, boxes=boxes)[0]


def l2_gb(shape, ks, st, boxes):
    """GB of K and V tiles the walk loads: keys walked per program x programs x 2 x head dim x 2 bytes."""
    n = len(ks)
    args = (ks, (1,) * n, st, (False,) * n)
    walk = K._walk(tuple(shape), shape[-2], shape[-1], *args, "fwd", boxes)
    programs = K._launch_tiles(shape[1:-2], n, *args, shape[-1], "fwd", boxes)[-1]
    return walk * programs * shape[0] * shape[-2] * 4 * shape[-1] / 1e9


def sweep(names):
    for name in names:
        shape, ks, st, alts = CASES[name]
        q, k, v = inputs(shape)
        n = len(ks)
        plan = K._plan(shape[1:-2], n, ks, (1,) * n, st, (False,) * n, shape[-1], "fwd")
        need = 4 * math.prod(shape[:-1]) * shape[-1] * math.prod(ks)   # FLOPs of the needed products
        ref = forward(q, k, v, ks, st, None)().clone()
        print(f"{name}: plan boxes {plan[3]}, {plan[4]}", flush=True)
        for boxes in [None, *alts]:
            fn = forward(q, k, v, ks, st, boxes)
            out = fn()
            torch.cuda.synchronize()
            diff = (out.float() - ref.float()).abs().max().item()
            ms = statistics.median(do_bench(fn, warmup=10, rep=100) for _ in range(3))
            bm, bn = boxes or plan[3:5]
            prods = K.walk_products(plan[2], *K._padded_window(ks, st, (False,) * n, n), bm, bn)
            walked = prods * shape[0] * shape[-2] * 4 * shape[-1]
            gb = l2_gb(shape, ks, st, boxes)
            print(f"  {str(bm):12s} {str(bn):12s} walk {walked / need:5.3f}x  {ms * 1e3:8.1f} us  "
                  f"{walked / ms / 1e9:5.0f} TFLOP/s walked  {need / ms / 1e9:5.0f} needed  "
                  f"L2 {gb:6.2f} GB = {gb / ms:5.2f} TB/s  max diff {diff:.2g}", flush=True)


def grid(names):
    """``sweep`` over every (query rows, key rows) in {64, 128} x {32, 64, 128}: the two boxes with
    the fewest walked products for each (``tiling.rank_boxes``), the plan's first."""
    for name in names:
        shape, ks, st, _ = CASES[name]
        n = len(ks)
        plan = K._plan(shape[1:-2], n, ks, (1,) * n, st, (False,) * n, shape[-1], "fwd")
        window = K._padded_window(ks, st, (False,) * n, n)
        alts = []
        for m in (64, 128):
            for kn in (32, 64, 128):
                ranked = tiling.rank_boxes(plan[2], *window, m, kn)
                alts += [(bm, bn) for _, bm, bn in ranked[:2] if (bm, bn) != tuple(plan[3:5])]
        CASES[name] = (shape, ks, st, alts)
    sweep(names)


def ncu(names):
    for name in names:
        shape, ks, st, _ = CASES[name]
        q, k, v = inputs(shape)
        for boxes in NCU[name]:
            fn = forward(q, k, v, ks, st, boxes)
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            fn()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            print(f"ncu: {name} boxes {boxes}", flush=True)


if __name__ == "__main__":
    mode, *names = sys.argv[1:] or ["sweep"]
    names = names or list(CASES)
    {"sweep": sweep, "grid": grid, "ncu": ncu}[mode](names)
