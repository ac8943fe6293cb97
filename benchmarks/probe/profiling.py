"""GPU time by kernel, shared by the probes that read a step apart from the host's launch cost."""
import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench


def kernel_times(fn, n: int = 5) -> list[tuple[float, int, str]]:
    """[(ms per call, launches per call, kernel name)], most GPU time first, over ``n`` calls of
    ``fn`` after one warm-up call (torch.profiler's device time)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    rows = [(e.self_device_time_total / n / 1e3, e.count // n, e.key) for e in p.key_averages()
            if getattr(e, "self_device_time_total", 0) > 0]
    return sorted(rows, reverse=True)


def step_breakdown(fn, n: int = 3, top: int = 12) -> tuple[float, float, list[tuple[float, int, str]]]:
    """(do_bench ms, GPU busy ms, the ``top`` kernels of :func:`kernel_times`) of one step ``fn``."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = do_bench(fn, warmup=30, rep=200)
    rows = kernel_times(fn, n)
    return t, sum(r[0] for r in rows), rows[:top]
