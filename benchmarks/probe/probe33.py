"""Probe (session 11): 16- and 32-row query boxes for NA with small windows. The cost model only
offered 64- and 128-row query boxes to the forward and dQ kernels (the wgmma M side); on the
NA-2D backbone case (7x7 windows, head dim 32) 64-row boxes walk 4.85x the needed products,
16-row boxes 2.2-2.6x, 32-row boxes 3.1-3.7x (``tiling.walk_products``). With head dim 32 the
scores' softmax and mask, not the dots, are most of the work. Times the forward and dQ kernels
of the backbone (and the forward of NA-2D large, whose best 32-row boxes walk 1.94x against
1.99x) at fixed warps and stages, through probe15's sweep machinery; errors are against the
first (current) configuration of each kernel.

    python benchmarks/probe/probe33.py
    PROBE_ROUND=2 python benchmarks/probe/probe33.py   # one-warp programs, after the first round
    PROBE_ROUND=3 python benchmarks/probe/probe33.py   # the resulting rule on other shapes
    PROBE_ROUND=4 python benchmarks/probe/probe33.py   # the backbone's dK/dV kernel
    PROBE_ROUND=5 python benchmarks/probe/probe33.py   # GNA-2D's forward on bigger tiles
"""
import os

import torch

import probe15 as P  # the script's folder is on sys.path

JOBS = [
    # (kind, case index, (query rows, key rows), warps, stages); the first of each (kind, case) is the current rule
    ("fwd", 1, (64, 64), 4, 3), ("fwd", 1, (64, 64), 4, 2),
    ("fwd", 1, (32, 64), 4, 3), ("fwd", 1, (32, 64), 2, 3), ("fwd", 1, (32, 32), 4, 3), ("fwd", 1, (32, 32), 2, 3),
    ("fwd", 1, (16, 16), 4, 3), ("fwd", 1, (16, 16), 2, 3), ("fwd", 1, (16, 16), 1, 3),
    ("fwd", 1, (16, 32), 2, 3), ("fwd", 1, (16, 64), 4, 3), ("fwd", 1, (16, 64), 2, 3),
    ("dq", 1, (64, 64), 4, 1), ("dq", 1, (64, 64), 4, 2),
    ("dq", 1, (32, 64), 4, 2), ("dq", 1, (32, 32), 4, 2), ("dq", 1, (16, 16), 4, 2), ("dq", 1, (16, 16), 2, 2),
    ("dq", 1, (16, 32), 2, 2),
    ("fwd", 0, (64, 64), 4, 3), ("fwd", 0, (32, 64), 4, 3), ("fwd", 0, (32, 64), 2, 3),
]
# second round (PROBE_ROUND=2): one warp per program won on the backbone forward in the first
JOBS2 = [
    ("fwd", 1, (64, 64), 4, 2),
    ("fwd", 1, (16, 16), 1, 3), ("fwd", 1, (16, 16), 1, 2), ("fwd", 1, (16, 16), 1, 4),
    ("fwd", 1, (16, 32), 1, 3), ("fwd", 1, (16, 64), 1, 3), ("fwd", 1, (32, 32), 1, 3), ("fwd", 1, (32, 64), 1, 3),
    ("fwd", 1, (32, 32), 2, 2), ("fwd", 1, (32, 16), 1, 3), ("fwd", 1, (32, 16), 2, 3),
    ("dq", 1, (64, 64), 4, 2),
    ("dq", 1, (16, 16), 1, 2), ("dq", 1, (16, 32), 1, 2), ("dq", 1, (32, 32), 1, 2), ("dq", 1, (32, 32), 2, 2),
    ("dq", 1, (64, 64), 2, 2),
]


# third round (PROBE_ROUND=3): the rule taken from rounds 1-2 (``kernels._plan``: 32x32 boxes at
# one warp for head dim 32 when they walk <= 0.7x the 64x64 boxes' products) on other small-window
# shapes, against 64x64 boxes at 4 warps; compiled in this process (the cases are not probe15's)
CASES3 = [
    ("2-D 3x3 D32", (64, 4, 32), (56, 56), (3, 3), (1, 1), None),
    ("2-D 13x13 D32", (16, 8, 32), (56, 56), (13, 13), (1, 1), None),
    ("2-D 7x7 D32 28x28", (64, 8, 32), (28, 28), (7, 7), (1, 1), None),
    ("1-D k7 D32", (8, 8, 32), (8192,), (7,), (1,), None),
    ("3-D 3x7x7 D32", (2, 4, 32), (8, 28, 28), (3, 7, 7), (1, 1, 1), None),
]


# fourth round (PROBE_ROUND=4): the dK/dV kernel of the backbone (it owns key boxes and walks query
# boxes; rows are (walked queries, owned keys); 32 x 64 at 4 warps is the current rule)
JOBS4 = [
    ("dkv", 1, (32, 64), 4, 1), ("dkv", 1, (32, 64), 4, 2), ("dkv", 1, (32, 64), 2, 1),
    ("dkv", 1, (32, 32), 1, 1), ("dkv", 1, (32, 32), 2, 1), ("dkv", 1, (16, 32), 1, 1), ("dkv", 1, (16, 32), 2, 1),
    ("dkv", 1, (16, 64), 4, 1), ("dkv", 1, (16, 64), 2, 1), ("dkv", 1, (64, 32), 2, 1), ("dkv", 1, (64, 32), 4, 1),
]


# fifth round (PROBE_ROUND=5): GNA-2D's forward (no mask: its query boxes share one window) on
# bigger tiles, which the 128x128 rule only offers to windows of >= 1024 keys (GNA-2D's holds 256)
JOBS5 = [
    ("fwd", 3, (64, 64), 4, 2), ("fwd", 3, (64, 64), 4, 3), ("fwd", 3, (64, 128), 4, 2), ("fwd", 3, (64, 128), 4, 3),
    ("fwd", 3, (128, 64), 8, 2), ("fwd", 3, (128, 64), 8, 3), ("fwd", 3, (128, 128), 8, 2), ("fwd", 3, (128, 128), 8, 3),
    ("fwd", 3, (128, 64), 4, 2),
]


def round3():
    import ops.neighborhood.kernels as K
    first = len(P.GPU_CASES)
    P.GPU_CASES.extend(CASES3)
    for ci in range(first, len(P.GPU_CASES)):
        name, (b, h, d), shape, kernel, stride, _ = P.GPU_CASES[ci]
        rank = len(shape)
        rule = K._plan(shape, rank, kernel, (1,) * rank, stride, (False,) * rank, d, "fwd")[3:]
        row = []
        for job in (("fwd", ci, (64, 64), 4, 2), ("fwd", ci, (32, 32), 1, 2), ("fwd", ci, (32, 32), 1, 3)):
            t, bm, bn, ratio, _ = P.run_sweep_job(job, time_it=True)
            row.append(f"{job[2]} w{job[3]} s{job[4]} walk {ratio:.2f}: {t * 1e3:7.1f} us")
        print(f"{name:18s} rule q{rule[0]} k{rule[1]} | " + " | ".join(row), flush=True)


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    if os.environ.get("PROBE_ROUND") == "3":
        return round3()
    jobs = {"2": JOBS2, "4": JOBS4, "5": JOBS5}.get(os.environ.get("PROBE_ROUND"), JOBS)
    P.precompile("sweep", jobs)
    refs = {}
    for job in jobs:
        kind, ci, rows, warps, stages = job
        name = P.GPU_CASES[ci][0]
        try:
            t, bm, bn, ratio, res = P.run_sweep_job(job, time_it=True)
        except Exception as e:
            print(f"{name:15s} {kind:3s} {rows} w{warps} s{stages}: {type(e).__name__} {str(e)[:160]}", flush=True)
            continue
        ref = refs.setdefault((kind, ci), res)
        err = (res - ref).abs().max().item()
        print(f"{name:15s} {kind:3s} rows {rows} w{warps} s{stages} q{bm} k{bn} walk {ratio:.2f}: "
              f"{t * 1e3:8.1f} us (err {err:.1e})", flush=True)


if __name__ == "__main__":
    main()
