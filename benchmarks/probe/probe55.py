"""Probe (session 21): VAN's eager training step with this tree's ``ops`` against another copy's
(``ab.py``) and against the plain path, in one process, so all three meet the same host at the
same minutes. Batch 128 at 224, bf16 autocast, channels-last, the bench's SGD step; rounds
alternate: do_bench ms (``PROBE_REP_MS`` of steps, default 1500: a VAN-b2 step takes ~0.1 s) and
CPU ms per step (launches not waited for). Session 22: BiFormer models too (``biformer_tiny``...).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe55.py /tmp/base/ops [van_b0 van_b2 biformer_tiny]
"""
import os
import sys

import torch

import ops
import zoo.biformer as biformer
import zoo.van as van  # registers the VAN models with timm
from tasks.bench.suites.models import _build, _train_step

from ab import alternating_arms, load_base  # the script's folder is on sys.path


def main():
    base = load_base(sys.argv[1])
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (128,), device="cuda")
    for name in sys.argv[2:] or ["van_b0", "van_b2"]:
        torch.manual_seed(0)
        model = _build(name, "cuda", True)
        step = _train_step(model, x, target, torch.bfloat16)

        module = biformer if name.startswith("biformer") else van

        def switch(copy, kernels):
            def use():
                module.ops = copy
                model.set_use_kernels(kernels)
            return use
        med = alternating_arms(step, {"this": switch(ops, True), "base": switch(base, True),
                                      "plain": switch(ops, False)},
                               rep=int(os.environ.get("PROBE_REP_MS", "1500")))
        print(f"{name} train b128: " + " | ".join(f"{arm} {t:.2f} ms (CPU {c:.2f})" for arm, (t, c) in med.items())
              + f" | plain / this {med['plain'][0] / med['this'][0]:.2f}x, plain / base "
              f"{med['plain'][0] / med['base'][0]:.2f}x", flush=True)
        module.ops = ops


if __name__ == "__main__":
    main()
