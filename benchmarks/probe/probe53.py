"""Probe (session 21): the host's cost of one eager LKA forward+backward at VAN's layer shapes.

VAN's eager training step is bound by the host on the H200 machines (probe26: the kernel path's
``backward()`` took 40 ms of CPU per VAN-b0 step against 28 ms for the plain path). This times
one LKA call as a VAN block makes it (batch 128, bf16 channels-last activations, fp32 weights as
autocast leaves them, gradients for x and every weight):

- "CPU us": the CPU time to issue the forward+backward from an idle GPU (launches not waited for);
- "GPU us": ``do_bench`` median of the same call (the larger of the two decides an eager step);
- launches and allocations per call (torch.profiler: ``cu*LaunchKernel*`` and ``aten::empty*``);

for this tree's ``ops`` (and another copy's, ``ab.py``, when a path is given) and for the
cuDNN chain (``F.conv2d`` x3 and the gate) under autocast.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe53.py [/tmp/base/ops]
"""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import ops
from lka_case import VAN, us
from tasks.bench.runner import _issue_ms


def lka_case(B: int, C: int, S: int):
    """(x, weights, grad): bf16 channels-last map, fp32 leaves of VAN's LKA, a fixed upstream grad."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, C, S, S, device="cuda", generator=g).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ws = [torch.randn(C, 1, 5, 5, device="cuda", generator=g) * 0.2, torch.randn(C, device="cuda", generator=g),
          torch.randn(C, 1, 7, 7, device="cuda", generator=g) * 0.14, torch.randn(C, device="cuda", generator=g),
          torch.randn(C, C, 1, 1, device="cuda", generator=g) * C ** -0.5, torch.randn(C, device="cuda", generator=g)]
    ws = [w.requires_grad_(True) for w in ws]
    go = torch.randn(x.shape, device="cuda", generator=g).to(torch.bfloat16).contiguous(
        memory_format=torch.channels_last)
    return x, ws, go


def cudnn_lka(x, w0, b0, w1, b1, w2, b2):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a = F.conv2d(x, w0, b0, padding=2, groups=x.shape[1])
        a = F.conv2d(a, w1, b1, padding=9, dilation=3, groups=x.shape[1])
        return x * F.conv2d(a, w2, b2)


def call_of(fn, x, ws, go):
    leaves = [x, *ws]

    def call():
        for t in leaves:
            t.grad = None
        fn(x, *ws).backward(go)
    return call


def counts(call) -> tuple[int, int]:
    """(kernel launches, tensor allocations) of one call."""
    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    launches = allocs = 0
    for e in prof.events():
        if "LaunchKernel" in e.name:
            launches += 1
        elif e.name in ("aten::empty", "aten::empty_strided", "aten::empty_like"):
            allocs += e.name != "aten::empty_like"   # empty_like calls empty_strided: count that one
    return launches, allocs


def main():
    impls = [("foveal", ops.large_kernel_attention)]
    if len(sys.argv) > 1:
        from ab import load_base
        impls.append(("base", load_base(sys.argv[1]).large_kernel_attention))
    impls.append(("cuDNN", cudnn_lka))
    host = torch.randn(64, device="cuda", requires_grad=True)
    print(f"host: trivial backward {_issue_ms(lambda: (host * 1.0).sum().backward(), 200) * 1e3:.0f} us")
    print(f"{'shape':18} {'impl':7} {'CPU us':>8} {'GPU us':>8} {'launches':>9} {'allocs':>7}")
    for B, C, S in VAN:
        x, ws, go = lka_case(B, C, S)
        calls = [(name, call_of(fn, x, ws, go)) for name, fn in impls]
        n = {name: counts(c) for name, c in calls}
        cpu = {name: [] for name, _ in calls}
        for _ in range(3):   # rounds alternate the implementations, so each meets the host's same minutes
            for name, c in calls:
                cpu[name].append(_issue_ms(c, 40) * 1e3)
        for name, c in calls:
            print(f"B{B} C{C} {S}x{S}".ljust(18) + f" {name:7} {statistics.median(cpu[name]):8.1f} {us(c):8.1f} "
                  f"{n[name][0]:9d} {n[name][1]:7d}", flush=True)
    print(f"host: trivial backward {_issue_ms(lambda: (host * 1.0).sum().backward(), 200) * 1e3:.0f} us")


if __name__ == "__main__":
    main()
