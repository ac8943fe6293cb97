"""Probe (session 9): a zoo model's GPU time by kernel with its kernels on and off (``use_kernels``),
for inference and a training step (batch 128, bf16 autocast, channels-last, the bench's step):
do_bench time, GPU busy time (sum of kernel times; a do_bench time well above it means the
host's launches decide), and the kernels with the most GPU time per iteration.

    python benchmarks/probe/probe24.py van_b0 van_b2
"""
import sys

import torch

from tasks.bench.suites.models import _build, _infer, _train_step  # registers the zoo models

from profiling import step_breakdown  # the script's folder is on sys.path


for name in sys.argv[1:] or ["van_b0"]:
    m = _build(name, "cuda", True)
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device="cuda")
    for mode, fn in (("infer", _infer(m, x, torch.bfloat16)), ("train", _train_step(m, x, y, torch.bfloat16))):
        for on in (True, False):
            m.set_use_kernels(on)
            t, busy, rows = step_breakdown(fn)
            print(f"== {name} {mode} use_kernels={on}: {t:.2f} ms/iter (do_bench), GPU busy {busy:.2f} ms", flush=True)
            for ms, count, key in rows:
                print(f"   {ms:7.3f} ms  {count:4d}x  {key[:90]}")
