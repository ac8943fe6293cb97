"""Probe (session 30): why VAN's MLP 3x3 on the Triton depthwise kernels is slower under
``torch.compile`` (probe69: CUDA-graph inference 5.87 against 5.56 ms for VAN-b0, 16.23 against
15.30 for VAN-b2) when alone it runs 2x faster than cuDNN's (probe68). GPU time per kernel name
(torch.profiler) of VAN-b0's bf16 inference at batch 128, eager and compiled (mode "default", no
CUDA graphs, so each kernel is seen), with the MLP's 3x3 on cuDNN and on Triton.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe70.py [model]
"""
import sys

import torch
from triton.testing import do_bench

from probe69 import _pair
from profiling import kernel_times
import zoo.van as van

name = sys.argv[1] if len(sys.argv) > 1 else "van_b0"
a, b = _pair(name, van.DWConv)
x = torch.randn(128, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)


def runner(m):
    def run():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return m(x)
    return run


for mode in ("eager", "default"):
    for arm, m in (("cuDNN 3x3", a), ("Triton 3x3", b)):
        if mode != "eager":
            m.compile(mode=mode)
        fn = runner(m)
        for _ in range(3):
            fn()
        ms = do_bench(fn, warmup=25, rep=200)
        rows = kernel_times(fn, 5)
        print(f"== {name} infer b128 {mode}, {arm}: {ms:.3f} ms per batch, GPU busy {sum(r[0] for r in rows):.3f} ms,"
              f" {sum(r[1] for r in rows)} launches", flush=True)
        for t, n, k in rows[:22]:
            print(f"  {t:7.3f} ms {n:4d}x  {k[:110]}")
