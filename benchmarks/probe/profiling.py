"""GPU time by kernel, shared by the probes that read a step apart from the host's launch cost."""
import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench


def _averages(fn, n: int, activity, warmup: int):
    """torch.profiler's per-name averages over ``n`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[activity]) as p:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    return p.key_averages()


def kernel_times(fn, n: int = 5) -> list[tuple[float, int, str]]:
    """[(ms per call, launches per call, kernel name)], most GPU time first, over ``n`` calls of
    ``fn`` after one warm-up call (torch.profiler's device time)."""
    rows = [(e.self_device_time_total / n / 1e3, e.count // n, e.key)
            for e in _averages(fn, n, ProfilerActivity.CUDA, 1) if getattr(e, "self_device_time_total", 0) > 0]
    return sorted(rows, reverse=True)


def cpu_op_times(fn, n: int = 4) -> tuple[float, float, list[tuple[float, float, str]]]:
    """(self CPU ms per call, recorded ops per call, [(self CPU ms per call, calls per call, op
    name)] most CPU time first) over ``n`` calls of ``fn`` after three warm-up calls (torch.profiler,
    CPU activity only)."""
    rows = [(e.self_cpu_time_total / n / 1e3, e.count / n, e.key)
            for e in _averages(fn, n, ProfilerActivity.CPU, 3) if e.key != "ProfilerStep*"]
    return sum(r[0] for r in rows), sum(r[1] for r in rows), sorted(rows, reverse=True)


def step_breakdown(fn, n: int = 3, top: int = 12) -> tuple[float, float, list[tuple[float, int, str]]]:
    """(do_bench ms, GPU busy ms, the ``top`` kernels of :func:`kernel_times`) of one step ``fn``."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = do_bench(fn, warmup=30, rep=200)
    rows = kernel_times(fn, n)
    return t, sum(r[0] for r in rows), rows[:top]


def print_kernel_trace(fn, n: int = 20, cpu_rows: int = 12, spans: bool = False, name_width: int = 90) -> None:
    """Trace ``n`` calls of ``fn`` (after 5 warm-up calls) with torch.profiler and print, per kernel
    name, its count and mean GPU time; the mean gap between consecutive kernels on the GPU or, with
    ``spans``, the GPU span of one call (over the second half of the calls) and its idle part; then
    the CPU ops that take longest."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    per = {}
    for e in kernels:
        count, t = per.get(e.name, (0, 0.0))
        per[e.name] = (count + 1, t + e.time_range.elapsed_us())
    for kname, (count, t) in per.items():
        print(f"    {count:3d} x {t / count:7.1f} us  {kname[:name_width]}")
    if spans:
        n_per = len(kernels) // n
        calls = [kernels[i:i + n_per] for i in range(n_per * (n // 2), len(kernels) - n_per + 1, n_per)]
        if calls:
            span = sum(c[-1].time_range.end - c[0].time_range.start for c in calls) / len(calls)
            busy = sum(e.time_range.elapsed_us() for c in calls for e in c) / len(calls)
            print(f"    one call on the GPU: span {span:.1f} us, busy {busy:.1f} us, idle {span - busy:.1f} us")
    else:
        gaps = [b.time_range.start - a.time_range.end for a, b in zip(kernels, kernels[1:])]
        if gaps:
            print(f"    GPU gaps between kernels: mean {sum(gaps) / len(gaps):.1f} us, max {max(gaps):.1f} us")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=cpu_rows, max_name_column_width=50),
          flush=True)
