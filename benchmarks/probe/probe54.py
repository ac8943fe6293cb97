"""Probe (session 21): where the CPU time of one eager LKA forward+backward goes on the GPU host
(probe53 measured 1.2-1.7 ms per call at VAN's layer shapes for 16 launches and 16 allocations).
cProfile of 100 calls at B128 C64 28x28 (VAN-b0 stage 2), and how many launches per call take
each path of ``Launcher`` (direct to the compiled kernel, or through Triton's jit).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe54.py
"""
import cProfile
import collections
import pstats

import torch

import ops
from ops.common import tuning
from probe53 import call_of, lka_case

paths = collections.Counter()
_compiled_call = tuning._Compiled.__call__
_resolve = tuning.Launcher._resolve


def _count_direct(self, grid, args):
    paths["direct (generic key)"] += 1
    return _compiled_call(self, grid, args)


def _count_resolve(self, *a, **k):
    paths["jit (resolve)"] += 1
    return _resolve(self, *a, **k)


def main():
    x, ws, go = lka_case(128, 64, 28)
    call = call_of(ops.large_kernel_attention, x, ws, go)
    for _ in range(10):
        call()
    torch.cuda.synchronize()
    tuning._Compiled.__call__ = _count_direct
    tuning.Launcher._resolve = _count_resolve
    for _ in range(10):
        call()
    torch.cuda.synchronize()
    print("launch paths per call:", {k: v / 10 for k, v in paths.items()})
    tuning._Compiled.__call__ = _compiled_call
    tuning.Launcher._resolve = _resolve
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(100):
        call()
    torch.cuda.synchronize()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumtime").print_stats(30)


if __name__ == "__main__":
    main()
