"""Probe (session 9): VAN's GPU time by kernel, session 8's LKA kernels against the row-block ones
(``FOVEAL_LKA_ROWS*`` switches read at call time), for inference and a training step (batch 128,
bf16 autocast, channels-last, the bench's step): do_bench time, GPU busy time, and the kernels
with the most GPU time per iteration.

    python benchmarks/probe/probe23.py van_b0 van_b2

Ran at 5e3b603; the ``FOVEAL_LKA_*`` switches it toggles (module globals of ``ops.lka.kernels``)
were removed when the row-block kernels became the only path, so run it in a checkout of that
commit.
"""
import sys

import torch

import ops.lka.kernels as L
from tasks.bench.suites.models import _build, _infer, _train_step  # registers the zoo models

from profiling import step_breakdown  # the script's folder is on sys.path


for name in sys.argv[1:] or ["van_b0"]:
    m = _build(name, "cuda", True)
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device="cuda")
    for mode, fn in (("infer", _infer(m, x, torch.bfloat16)), ("train", _train_step(m, x, y, torch.bfloat16))):
        for on in (False, True):
            L._ROWS = L._SPLIT_PW = L._ROWS_WGRAD = on
            t, busy, rows = step_breakdown(fn)
            print(f"== {name} {mode} row-block kernels={on}: {t:.2f} ms/iter (do_bench), GPU busy {busy:.2f} ms", flush=True)
            for ms, count, key in rows:
                print(f"   {ms:7.3f} ms  {count:4d}x  {key[:90]}")
