"""Probe (session 21): VAN's eager training step with this tree's ``ops`` against another copy's
(``ab.py``) and against the plain path, in one process, so all three meet the same host at the
same minutes. Batch 128 at 224, bf16 autocast, channels-last, the bench's SGD step; rounds
alternate: do_bench ms (``PROBE_REP_MS`` of steps, default 1500: a VAN-b2 step takes ~0.1 s) and
CPU ms per step (launches not waited for).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe55.py /tmp/base/ops [van_b0 van_b2]
"""
import os
import statistics
import sys

import torch
from triton.testing import do_bench

import ops
import zoo.van as van  # registers the VAN models with timm
from tasks.bench.suites.models import _build, _train_step

from ab import cpu_ms, load_base  # the script's folder is on sys.path


def main():
    base = load_base(sys.argv[1])
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (128,), device="cuda")
    for name in sys.argv[2:] or ["van_b0", "van_b2"]:
        torch.manual_seed(0)
        model = _build(name, "cuda", True)
        step = _train_step(model, x, target, torch.bfloat16)
        arms = {"this": (ops, True), "base": (base, True), "plain": (ops, False)}
        times = {arm: [] for arm in arms}
        host = {arm: [] for arm in arms}

        def use(arm):
            van.ops, kernels = arms[arm]
            model.set_use_kernels(kernels)
        for arm in arms:   # warm-up: compile and tune each arm's kernels
            use(arm)
            for _ in range(3):
                step()
        for _ in range(3):
            for arm in arms:
                use(arm)
                times[arm].append(do_bench(step, warmup=100, rep=int(os.environ.get("PROBE_REP_MS", "1500"))))
                host[arm].append(cpu_ms(step, 8))
        med = {arm: (statistics.median(times[arm]), statistics.median(host[arm])) for arm in arms}
        print(f"{name} train b128: " + " | ".join(f"{arm} {t:.2f} ms (CPU {c:.2f})" for arm, (t, c) in med.items())
              + f" | plain / this {med['plain'][0] / med['this'][0]:.2f}x, plain / base "
              f"{med['plain'][0] / med['base'][0]:.2f}x", flush=True)
    van.ops = ops


if __name__ == "__main__":
    main()
