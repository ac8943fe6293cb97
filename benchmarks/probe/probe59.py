"""Probe (session 23): BEVANet's depthwise convs, Triton (``ops.depthwise_conv2d``) against cuDNN
(``F.conv2d``), at the model's layer shapes; then the model's step apart by kernel.

Part 1, per conv (bf16 channels-last maps, fp32 weights under bf16 autocast, as in the model):
GPU ms (torch.profiler device time, host cost excluded) of the forward and of forward+backward,
and the CPU ms to issue one call (50 calls timed without waiting for the GPU).
Part 2: ``step_breakdown`` of BEVANet's training step (batch 8 at 1024x1024) and inference
(batch 1 at 1024x2048), kernels on and off: do_bench ms, GPU busy ms, top kernels.
``--host``: instead, the host's side of the same steps: alternating arms in one process (kernels;
kernels with the 1x1s as cuDNN convs; plain) and each path's CPU operators (torch.profiler).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe59.py [bevanet|bevanet_s] [--convs-only|--host]
"""
import sys
import time

import timm
import torch
import torch.nn.functional as F

import ops
import zoo  # noqa: F401  (registers the models)
from tasks.bench.suites.models import _build, _infer, _train_step

from ab import alternating_arms  # the script's folder is on sys.path
from profiling import cpu_op_times, kernel_times, step_breakdown
from zoo.bevanet import PointwiseConv


def conv_shapes(c: int, batch: int, h: int, w: int):
    """(label, [B, C, H, W], kernel, dilation) of every SDLSKA conv at input h x w."""
    out = []
    for name, ch, div, k in (("detail", 2 * c, 8, 7), ("sem/32", 8 * c, 32, 11), ("sem/64", 16 * c, 64, 11)):
        shape = (batch, ch, h // div, w // div)
        out += [(f"{name} 5x5", shape, (5, 5), 1), (f"{name} 1x{k} d3", shape, (1, k), 3),
                (f"{name} {k}x1 d3", shape, (k, 1), 3)]
    return out


def time_conv(label, shape, kernel, dil):
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(shape[1], 1, *kernel, device="cuda", requires_grad=True)
    b = torch.randn(shape[1], device="cuda", requires_grad=True)
    pad = tuple(dil * (k - 1) // 2 for k in kernel)
    impls = {"triton": lambda xx: ops.depthwise_conv2d(xx, wt, b, dil),
             "cudnn": lambda xx: F.conv2d(xx, wt, b, 1, pad, dil, shape[1])}
    g = torch.randn_like(x)
    row = []
    for name, fn in impls.items():
        def fwd():
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                fn(x)

        xg = x.detach().requires_grad_(True)

        def fwd_bwd():
            with torch.autocast("cuda", torch.bfloat16):
                y = fn(xg)
            y.backward(g)

        gpu = [sum(r[0] for r in kernel_times(f, 5)) for f in (fwd, fwd_bwd)]
        cpu = []
        for f in (fwd, fwd_bwd):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(50):
                f()
            cpu.append((time.perf_counter() - t0) / 50 * 1e3)
            torch.cuda.synchronize()
        row.append(f"{name} fwd {gpu[0]:.3f} / f+b {gpu[1]:.3f} ms GPU, CPU {cpu[0]:.3f} / {cpu[1]:.3f}")
    print(f"{label:<18} {str(list(shape)):<22} " + " | ".join(row), flush=True)


def host(name: str):
    for mode, (batch, h, w), dtype in (("infer", (1, 1024, 2048), None), ("infer", (1, 1024, 2048), torch.bfloat16),
                                       ("train", (8, 1024, 1024), torch.bfloat16)):
        x = torch.randn(batch, 3, h, w, device="cuda").to(memory_format=torch.channels_last)
        torch.manual_seed(0)
        model = _build(name, "cuda", True)
        step = _train_step(model, x, dtype) if mode == "train" else _infer(model, x, dtype)

        def arm(kernels, matmul_1x1):
            def use():
                model.set_use_kernels(kernels)
                for m in model.modules():
                    if isinstance(m, PointwiseConv):
                        m.use_kernels = matmul_1x1
            return use
        arms = {"kernels": arm(True, True), "kernels, 1x1 conv": arm(True, False), "plain": arm(False, False)}
        med = alternating_arms(step, arms, rep=600)
        label = f"{name} {mode} b{batch} {h}x{w} {'fp32' if dtype is None else 'bf16 autocast'}"
        print(f"# {label}: " + " | ".join(f"{a} {t:.2f} ms (CPU {c:.2f})" for a, (t, c) in med.items()), flush=True)
        for a in ("kernels", "plain"):
            arms[a]()
            total, count, rows = cpu_op_times(step, 4)
            print(f"  {a}: profiled self CPU {total:.1f} ms over {count:.0f} ops per step")
            for ms, calls, op in rows[:12]:
                print(f"    {ms:6.2f} ms {calls:6.0f}x  {op[:70]}")
        del model, step
        torch.cuda.empty_cache()


def main():
    name = next((a for a in sys.argv[1:] if not a.startswith("--")), "bevanet")
    if "--host" in sys.argv:
        return host(name)
    c = 32 if name == "bevanet_s" else 64
    for title, (batch, h, w) in (("train b8 1024x1024", (8, 1024, 1024)), ("infer b1 1024x2048", (1, 1024, 2048))):
        print(f"# {name} convs, {title}")
        for case in conv_shapes(c, batch, h, w):
            time_conv(*case)
    if "--convs-only" in sys.argv:
        return
    for mode, (batch, h, w) in (("train", (8, 1024, 1024)), ("infer", (1, 1024, 2048))):
        x = torch.randn(batch, 3, h, w, device="cuda").to(memory_format=torch.channels_last)
        for kernels in (True, False):
            torch.manual_seed(0)
            model = _build(name, "cuda", kernels)
            step = _train_step(model, x, torch.bfloat16) if mode == "train" else _infer(model, x, torch.bfloat16)
            t, busy, top = step_breakdown(step, n=3, top=14)
            print(f"# {name} {mode} b{batch} {h}x{w} use_kernels={kernels}: do_bench {t:.2f} ms, GPU busy {busy:.2f} ms")
            for ms, count, kname in top:
                print(f"  {ms:7.3f} ms {count:4d}x  {kname[:110]}")
            del model, step
            torch.cuda.empty_cache()


if __name__ == "__main__":
    assert timm.is_model("bevanet")
    main()
