"""Probe (session 14): why eager BRA forward+backward costs more CPU at B64 56x56 than at 28x28.

The same Python and the same five launches run for every shape, yet probe36 measured 623 us of
CPU per back-to-back call at 56x56 against 337 us at 28x28 (and session 12's profile showed the
backward node's self time at 260 against 97 us). Interleaving the shapes (so host drift hits
both), this times back-to-back calls of: the op, the op with the autograd engine on the calling
thread (``set_multithreading_enabled(False)``), a do-nothing ``autograd.Function`` with the same
tensors, and the op after ``torch.cuda.empty_cache``-free warm-up; then one CPU profile per shape
listing the top self-CPU entries and any ``cudaMalloc`` / ``cudaFree`` / synchronizing calls.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe37.py
"""
import statistics

import torch

from bra_case import SHAPES, cpu_ms, fwd_bwd, noop_fwd_bwd


def back_to_back_us(fn) -> float:
    return cpu_ms(fn, 50) * 1e3


def main():
    cases = {}
    for B, S, C, nw, topk in SHAPES[:3]:
        call, (q, k, v, go), leaves = fwd_bwd(B, S, C, nw, topk)
        cases[f"B{B} {S}x{S}"] = (call, noop_fwd_bwd(leaves, go))
    figures = {name: {"op": [], "op, engine on caller": [], "no-op Function": []} for name in cases}
    for _ in range(5):
        for name, (call, noop) in cases.items():
            figures[name]["op"].append(back_to_back_us(call))
            torch.autograd.set_multithreading_enabled(False)
            figures[name]["op, engine on caller"].append(back_to_back_us(call))
            torch.autograd.set_multithreading_enabled(True)
            figures[name]["no-op Function"].append(back_to_back_us(noop))
    print("back-to-back CPU us per call, medians of 5 interleaved rounds")
    for name, f in figures.items():
        print(f"  {name:12s} " + "  ".join(f"{k}: {statistics.median(v):5.0f}" for k, v in f.items()), flush=True)
    from torch.profiler import ProfilerActivity, profile
    for name, (call, _) in cases.items():
        for _ in range(5):
            call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                call()
            torch.cuda.synchronize()
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        print(f"-- {name}: top self-CPU entries over 20 calls (us per call, count)")
        for e in rows[:12]:
            print(f"     {e.key[:48]:48s} {e.self_cpu_time_total / 20:8.1f}  x{e.count}")
        flagged = [e for e in rows if any(s in e.key for s in ("Malloc", "Free", "Synchronize", "Memcpy", "Memset"))]
        for e in flagged:
            print(f"   ! {e.key[:48]:48s} {e.self_cpu_time_total / 20:8.1f}  x{e.count}")
        print(f"   allocator: {torch.cuda.memory_stats().get('num_alloc_retries', 0)} alloc retries, "
              f"{torch.cuda.memory_stats().get('segment.all.allocated', 0)} segments allocated so far", flush=True)


main()
