"""Probe (session 5): where a VAN training step's time goes on the host, kernels on vs off.

For each setting: the step time (do_bench), the GPU busy time per step (sum of CUDA kernel
times, torch.profiler), the CPU time of the Python step (perf_counter over back-to-back steps
with a sync only at the end: when it is close to the step time, the step is host-bound), and a
cProfile of the kernels-on step (top functions by own time). Usage: probe11.py [model] [batch].
"""
import cProfile
import io
import pstats
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import zoo  # noqa: F401
from tasks.bench.suites.models import _build, _train_step

name = sys.argv[1] if len(sys.argv) > 1 else "van_b0"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 128
m = _build(name, "cuda", True)
x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (batch,), device="cuda")
step = _train_step(m, x, y, torch.bfloat16)   # the bench's step: SGD, bf16 autocast

for on in (True, False):
    m.set_use_kernels(on)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t_step = do_bench(step, warmup=50, rep=300)
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    gpu = sum(getattr(e, "self_device_time_total", 0) for e in p.key_averages()) / 3 / 1e3
    n_kernels = sum(e.count for e in p.key_averages() if getattr(e, "self_device_time_total", 0) > 0) / 3
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    t_host = (time.perf_counter() - t0) / 10 * 1e3   # the host runs ahead until the queue fills
    torch.cuda.synchronize()
    t_all = (time.perf_counter() - t0) / 10 * 1e3
    print(f"== {name} b{batch} train use_kernels={on}: step {t_step:.2f} ms (do_bench), GPU busy {gpu:.2f} ms, "
          f"{n_kernels:.0f} kernels/step, host loop {t_host:.2f} ms/step (with sync {t_all:.2f})", flush=True)
    if on:
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(10):
            step()
        torch.cuda.synchronize()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(28)
        print("\n".join(s.getvalue().splitlines()[:45]), flush=True)
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats("ops/|zoo/|autograd|optim", 25)
        print("\n".join(s.getvalue().splitlines()[:45]), flush=True)
