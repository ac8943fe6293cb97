"""Probe (session 3): why does do_bench time the eager BRA forward+backward well above its
back-to-back CPU cost? Same call timed three ways, then the CPU-side CUDA runtime calls of a
do_bench-style loop (L2 flush, events) from the profiler: synchronizing calls show up there."""
import time

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from bra_case import cpu_ms, fb


def events_ms(fn, n=50, flush=None):
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        if flush is not None:
            flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return sorted(s.elapsed_time(e) for s, e in zip(starts, ends))[n // 2]


cache = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")
print(f"back-to-back CPU      {cpu_ms(fb):.3f} ms")
print(f"do_bench median       {do_bench(fb, warmup=10, rep=60, return_mode='median'):.3f} ms")
print(f"events, no flush      {events_ms(fb):.3f} ms")
print(f"events, L2 flush      {events_ms(fb, flush=cache):.3f} ms")
t = time.perf_counter()
for _ in range(20):
    cache.zero_()
    fb()
torch.cuda.synchronize()
print(f"flush+call wall/iter  {(time.perf_counter() - t) / 20 * 1e3:.3f} ms")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    events_ms(fb, n=10, flush=cache)
rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
print("CPU self time per iteration (top 25):")
for e in rows[:25]:
    print(f"  {e.self_cpu_time_total / 10 / 1e3:8.3f} ms  x{e.count / 10:<5.1f} {e.key[:80]}")
