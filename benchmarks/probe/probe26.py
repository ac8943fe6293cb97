"""Probe (session 10): where the host time of a zoo model's eager training step goes (VAN-b0 is
host-bound: its GPU work is shorter than the time PyTorch takes to launch it). Batch 128, bf16
autocast, channels-last, the bench's SGD step; kernels on and off:

- do_bench ms per step, and the CPU time of its parts (forward + loss, ``backward()``, the
  optimizer step and ``zero_grad``) with no synchronisation (when the host is the bottleneck,
  these add up to the step);
- the CPU self time per step of the ops torch.profiler records, most first.

    python benchmarks/probe/probe26.py van_b0
"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from tasks.bench.suites.models import _build  # registers the zoo models


def parts(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def fwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return loss_fn(model(x), y)

    def step():
        fwd().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return fwd, opt, step


def cpu_parts(fwd, opt, n=20):
    t = [0.0, 0.0, 0.0]
    for i in range(n + 3):
        torch.cuda.synchronize()
        a = time.perf_counter()
        loss = fwd()
        b = time.perf_counter()
        loss.backward()
        c = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        d = time.perf_counter()
        if i >= 3:
            t = [t[0] + b - a, t[1] + c - b, t[2] + d - c]
    return [v / n * 1e3 for v in t]


for name in sys.argv[1:] or ["van_b0"]:
    m = _build(name, "cuda", True).train()
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device="cuda")
    for on in (True, False):
        m.set_use_kernels(on)
        fwd, opt, step = parts(m, x, y)
        for _ in range(3):
            step()
        ms = do_bench(step, warmup=30, rep=300)
        f, b, o = cpu_parts(fwd, opt)
        print(f"== {name} use_kernels={on}: {ms:.2f} ms/step (do_bench); CPU ms: forward {f:.2f}, backward() {b:.2f}, "
              f"opt+zero {o:.2f}", flush=True)
        torch.cuda.synchronize()
        n = 5
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(n):
                step()
            torch.cuda.synchronize()
        rows = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows) / n / 1e3
        print(f"   profiled CPU self time {total:.2f} ms/step (profiler overhead included)")
        for e in rows[:32]:
            print(f"   {e.self_cpu_time_total / n / 1e3:7.3f} ms {e.count // n:5d}x  {e.key[:80]}")
