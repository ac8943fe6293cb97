"""Probe (session 10): VAN's 1x1 convolutions on the kernel path as ``F.linear`` over the channel
axis (``zoo.van.pointwise``, the current choice) or as the module's own ``nn.Conv2d`` call
(cuDNN), in an eager training step (batch 128, bf16 autocast, channels-last, the bench's SGD
step). probe26 on a slow host counted ~250 us of host time per linear forward+backward (addmm,
two mm, a bias sum, transposes) against ~125 us per 1x1 convolution forward+backward. Prints
do_bench ms per step (alternating the two, twice) and the GPU busy time (sum of kernel times).

    python benchmarks/probe/probe28.py van_b0 van_b2
"""
import sys
import time

import torch

import zoo.van as van
from tasks.bench.suites.models import _build, _train_step  # registers the zoo models

from profiling import kernel_times  # the script's folder is on sys.path
from triton.testing import do_bench

LINEAR = van.pointwise


def as_conv(conv, x, as_matmul):
    return conv(x)


def host_speed() -> float:
    x = torch.randn(64, device="cuda", requires_grad=True)
    for _ in range(100):
        (x * 1.0).sum().backward()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(1000):
        (x * 1.0).sum().backward()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / 1000 * 1e6


for name in sys.argv[1:] or ["van_b0"]:
    m = _build(name, "cuda", True)
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device="cuda")
    step = _train_step(m, x, y, torch.bfloat16)
    print(f"== {name} train, kernels on; host: trivial backward {host_speed():.0f} us", flush=True)
    for rnd in range(2):
        for label, fn in (("linear", LINEAR), ("conv", as_conv)):
            van.pointwise = fn
            for _ in range(3):
                step()
            ms = do_bench(step, warmup=30, rep=300)
            busy = sum(r[0] for r in kernel_times(step, 3)) if rnd == 0 else float("nan")
            print(f"   1x1 as {label:6s}: {ms:7.2f} ms/step, GPU busy {busy:6.2f} ms", flush=True)
    van.pointwise = LINEAR
