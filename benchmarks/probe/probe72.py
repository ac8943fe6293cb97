"""Probe (session 30): the depthwise conv's small-kernel tiles (``_small_kernel_config``, from
probe71) against the row-block rule that 3x3s took before, same process.

- ``ops``: forward and flipped (input-gradient) launches of VAN's MLP 3x3 maps (batch 128, bf16,
  channels-last, fp32 weights), do_bench ms, alternating rounds.
- ``busy``: VAN-b0 / VAN-b2 bf16 inference at batch 128, GPU busy time per batch (torch.profiler's
  kernel time) and the depthwise launches' share, old and new tiles, two rounds.
- ``van``: VAN-b0 / VAN-b2 eager bf16 steps (inference and training, batch 128) with the new tiles
  and the old ones (``ab.alternating_arms``; the depthwise programs are rebuilt per arm).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe72.py [ops] [busy] [van]
"""
import statistics
import sys

import torch
from triton.testing import do_bench

import ops.lka.eager as E
import ops.lka.kernels as L

NEW = L._small_kernel_config


def old_config(c, h, w):
    return L._rows_config(c, h, w, 1, max_rows=12, elems=L._conv_elems(w, 1))


def use(new: bool):
    L._small_kernel_config = NEW if new else old_config
    E._conv_program.cache_clear()


def ops_ab():
    shapes = [(128, 256, 56, 56), (128, 512, 28, 28), (128, 640, 14, 14), (128, 512, 56, 56),
              (128, 1024, 28, 28), (128, 1280, 14, 14), (1, 256, 128, 256)]
    print("3x3 depthwise, bf16 channels-last x, fp32 weights: old tiles / new tiles, ms (median of 5 alternations)")
    for shape in shapes:
        b, c, h, w = shape
        x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        wt, bias = torch.randn(c, 1, 3, 3, device="cuda") * 0.3, torch.randn(c, device="cuda")
        y = torch.empty_like(x)
        ref = torch.nn.functional.conv2d(x.float(), wt, bias, padding=1, groups=c)
        row = []
        for flip in (False, True):
            t = {True: [], False: []}
            for _ in range(5):
                for new in (False, True):
                    use(new)
                    fn = lambda: L.dw_conv(x, wt, None if flip else bias, 1, flip=flip, out=y)
                    fn()
                    t[new].append(do_bench(fn, warmup=10, rep=40))
            if not flip:
                err = ((y.float() - ref).norm() / ref.norm()).item()
            row.append(f"{'dgrad' if flip else 'fwd'} {statistics.median(t[False]):.4f} / {statistics.median(t[True]):.4f}")
        print(f"B{b} C{c} {h}x{w}: " + ", ".join(row) + f" (rel. error {err:.1e})", flush=True)


def van_ab():
    from ab import alternating_arms
    from tasks.bench.suites.models import _build, _infer, _train_step
    x = torch.randn(128, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    for name in ("van_b0", "van_b2"):
        m = _build(name, "cuda", True)
        for mode in ("infer", "train"):
            step = _infer(m, x, torch.bfloat16) if mode == "infer" else _train_step(m, x, torch.bfloat16)
            r = alternating_arms(step, {"old": lambda: use(False), "new": lambda: use(True)}, rounds=3, rep=1200)
            print(f"{name} {mode} b128 eager: old tiles {r['old'][0]:.2f} ms (CPU {r['old'][1]:.2f}), "
                  f"new {r['new'][0]:.2f} ms (CPU {r['new'][1]:.2f})", flush=True)
    use(True)


def busy():
    from profiling import kernel_times
    from tasks.bench.suites.models import _build, _infer
    x = torch.randn(128, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    for name in ("van_b0", "van_b2"):
        step = _infer(_build(name, "cuda", True), x, torch.bfloat16)
        for _ in range(2):
            for new in (False, True):
                use(new)
                for _ in range(3):
                    step()
                rows = kernel_times(step, 5)
                dw = sum(r[0] for r in rows if "dw_rows" in r[2])
                print(f"{name} infer GPU busy per batch, {'new' if new else 'old'} tiles: "
                      f"{sum(r[0] for r in rows):.3f} ms (dw_rows {dw:.3f})", flush=True)
    use(True)


if __name__ == "__main__":
    parts = [a for a in sys.argv[1:] if a in ("ops", "busy", "van")] or ["ops", "busy", "van"]
    if "ops" in parts:
        ops_ab()
    if "busy" in parts:
        busy()
    if "van" in parts:
        van_ab()
