"""Probe (session 13): BiFormer-T's step, this tree's ``ops`` against another copy's, in one process.

The bench's BiFormer-T rows moved between runs (train 2.27-2.38x over the plain path in session
12, 1.82x in session 13's first run) on hosts of different speeds. Here both copies meet the same
host at the same minutes: the model (batch 128 at 224, bf16 autocast, channels-last, SGD step, as
``foveal bench models``) runs its routed attention through ``ops`` or through the other copy,
alternating 3 times: do_bench ms and CPU ms per step (launches not waited for), then the GPU time
of the routed-attention kernels per step for each copy (torch.profiler).

    git worktree add /tmp/base <commit> && python benchmarks/probe/probe35.py /tmp/base/ops
"""
import statistics
import sys

import torch
from triton.testing import do_bench

import ops
import zoo.biformer as biformer  # registers the BiFormer models with timm
from tasks.bench.suites.models import _build, _infer, _train_step

from ab import cpu_ms, load_base  # the script's folder is on sys.path
from profiling import kernel_times


def main():
    base = load_base(sys.argv[1])
    copies = {"base": base, "this": ops}
    torch.manual_seed(0)
    model = _build("biformer_tiny", "cuda", True)
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (128,), device="cuda")
    for mode in ("train", "infer"):   # each builder sets the model's mode
        step = _train_step(model, x, target, torch.bfloat16) if mode == "train" else _infer(model, x, torch.bfloat16)
        times = {name: [] for name in copies}
        host = {name: [] for name in copies}
        for name, copy in copies.items():   # warm-up: compile and autotune both copies' kernels
            biformer.ops = copy
            for _ in range(3):
                step()
        for _ in range(3):
            for name, copy in copies.items():
                biformer.ops = copy
                times[name].append(do_bench(step, warmup=100, rep=500))
                host[name].append(cpu_ms(step, 10))
        print(f"biformer_tiny {mode} b128: do_bench ms base {statistics.median(times['base']):.2f}, "
              f"this {statistics.median(times['this']):.2f} | CPU ms/step base {statistics.median(host['base']):.2f}, "
              f"this {statistics.median(host['this']):.2f}", flush=True)
        for name, copy in copies.items():
            biformer.ops = copy
            rows = kernel_times(step, 3)
            mine = [r for r in rows if any(s in r[2] for s in ("_bs_", "_region_"))]
            print(f"  {name}: GPU busy {sum(r[0] for r in rows):.2f} ms/step; routed attention kernels: "
                  + ", ".join(f"{r[2].split('_kernel')[0].lstrip('_')} {r[0] * 1e3:.0f} us x{r[1]}" for r in mine),
                  flush=True)
    biformer.ops = ops


main()
