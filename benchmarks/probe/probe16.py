"""Probe (session 7): why VAN's compiled training step is slower with the LKA kernels.

A VAN training step (batch 128 at 224, bf16 autocast, channels-last, SGD) in three settings:
kernels on eager, kernels on compiled, kernels off compiled (``nn.Module.compile()``, as
``foveal bench models --compile default`` does). For each: the step time (do_bench) and the top
CUDA kernels by GPU time per step (torch.profiler), so the kernels that the compiled step adds
(layout copies, recomputation) read off against the eager step. Usage: probe16.py [model] [batch].
"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import zoo  # noqa: F401
from tasks.bench.suites.models import _build, _train_step

name = sys.argv[1] if len(sys.argv) > 1 else "van_b0"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 128
x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (batch,), device="cuda")


def run(use_kernels: bool, compiled: bool, top: int = 22) -> None:
    torch._dynamo.reset()
    # the bench's model and step: channels-last, SGD, bf16 autocast; compiled in place
    step = _train_step(_build(name, "cuda", use_kernels, "default" if compiled else None), x, y, torch.bfloat16)

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t_step = do_bench(step, warmup=30, rep=200)
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = [e for e in p.key_averages() if getattr(e, "self_device_time_total", 0) > 0]
    events.sort(key=lambda e: -e.self_device_time_total)
    busy = sum(e.self_device_time_total for e in events) / 3 / 1e3
    n = sum(e.count for e in events) / 3
    print(f"== {name} b{batch} use_kernels={use_kernels} compiled={compiled}: step {t_step:.2f} ms, "
          f"GPU busy {busy:.2f} ms, {n:.0f} kernels/step (first 3 steps {warm:.0f} s)", flush=True)
    for e in events[:top]:
        print(f"  {e.self_device_time_total / 3 / 1e3:7.3f} ms  x{e.count / 3:5.0f}  {e.key[:110]}")
    sys.stdout.flush()


run(True, False)
run(True, True)
run(False, True)
