"""Probe (session 16): where does the NA-2D backbone forward's time go? (NA forward, B64 56x56,
7x7, H4 D32, bf16; 32x32 query/key boxes on one warp since session 11.)

    python benchmarks/probe/probe42.py time   # forward with the per-element window test, with only
                                              # the walk's bounds (MASK_MODE 1) and with no mask (0):
                                              # the last two give wrong outputs, they bound what the
                                              # mask costs
    ncu --clock-control none --profile-from-start off -k regex:_na_fwd_kernel --section ... \
        python benchmarks/probe/probe42.py ncu [case ...]   # one profiled forward per case

Cases: "backbone" (default), "gna2d", "large".
"""
import statistics
import sys

import torch
from triton.testing import do_bench

import ops.neighborhood.kernels as K

CASES = {"backbone": ((64, 56, 56, 4, 32), (7, 7), (1, 1)),
         "large": ((1, 96, 96, 24, 128), (17, 17), (1, 1)),
         "gna2d": ((1, 96, 96, 24, 128), (16, 16), (8, 16))}


def inputs(shape):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3)]


def forward(q, k, v, ks, st):
    n = len(ks)
    return K.na_forward(q, k, v, ks, (1,) * n, st, (False,) * n, q.shape[-1] ** -0.5)


def set_mask_mode(mode):
    """Force the forward's MASK_MODE (None: the host's rule)."""
    K._mask_mode = ORIGINAL if mode is None else (lambda *a, **kw: mode)
    K._fwd_launch.cache_clear()
    K._na_fwd.sites.clear()


ORIGINAL = K._mask_mode


def time_modes():
    shape, ks, st = CASES["backbone"]
    q, k, v = inputs(shape)
    ref = forward(q, k, v, ks, st)[0].clone()
    print("NA-2D backbone forward, us (medians of 5 do_bench medians); max |diff| from the masked output")
    for mode in (None, 1, 0):
        set_mask_mode(mode)
        out = forward(q, k, v, ks, st)[0]
        ts = [do_bench(lambda: forward(q, k, v, ks, st), warmup=10, rep=100) for _ in range(5)]
        label = {None: "rule (2: per-element test)", 1: "1: walk bounds only", 0: "0: no mask"}[mode]
        print(f"  MASK_MODE {label:28s} {1e3 * statistics.median(ts):7.1f} us   diff {(out - ref).abs().max().item():.3g}",
              flush=True)
    set_mask_mode(None)


def profile(names):
    for name in names or ["backbone"]:
        shape, ks, st = CASES[name]
        q, k, v = inputs(shape)
        forward(q, k, v, ks, st)   # autotune and compile outside the profiled range
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        forward(q, k, v, ks, st)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    if sys.argv[1] == "time":
        time_modes()
    else:
        profile(sys.argv[2:])
