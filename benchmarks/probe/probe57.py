"""Probe (session 22): where the host time of VAN's eager training step goes, by operator.

probe55/56 time VAN's eager step as a whole (host-bound with kernels: ~1,250 launches for VAN-b0).
This one profiles a few steps with ``torch.profiler`` (CPU activity only, so the GPU's clock is not
involved) for the kernel path and the plain path, and prints per operator: calls per step, self CPU
us per step, and the step's total. The profiler adds its own cost per op, so the shares, not the
absolute figures, are what to read.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe57.py [van_b0 ...]
"""
import sys

import torch

from profiling import cpu_op_times  # the script's folder is on sys.path


def breakdown(step, steps: int = 4, top: int = 28) -> None:
    total, calls, rows = cpu_op_times(step, steps)
    print(f"  profiled self CPU per step {total:.1f} ms over {calls:.0f} recorded ops")
    for ms, count, name in rows[:top]:
        print(f"  {name[:58]:58s} {count:7.0f} calls {ms:7.2f} ms {100 * ms / total:5.1f}%")


def main():
    from tasks.bench.suites.models import _build, _train_step   # imports zoo: the models are registered
    dev = "cuda"
    x = torch.randn(128, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (128,), device=dev)
    for name in sys.argv[1:] or ["van_b0"]:
        for kernels in (True, False):
            torch.manual_seed(0)
            model = _build(name, dev, kernels)
            step = _train_step(model, x, target, torch.bfloat16)
            print(f"{name} train b128, use_kernels={kernels}", flush=True)
            breakdown(step)
            del model, step
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
