"""Probe (session 20): which difference from a do-nothing ``autograd.Function`` makes the autograd
engine's own share of an eager BRA forward+backward larger (probe49: "engine in" and "engine
out" 15-25 us above the no-op's on the H200 hosts).

Variants of the no-op, each adding one trait of ``_RoutedAttention``: GPU work queued by the
forward (a ~80 us spin kernel), gradients that are views of one [3, ...] allocation, six saved
tensors including the output (and two extra inputs, whose gradients are None); then all three,
and the fused op. probe49's timeline, medians of 60 calls, GPU idle before each, three rounds.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe51.py
"""
import torch

import ops
from bra_case import SHAPES, fwd_bwd
from probe49 import PIECES, _stamped, timeline


def _variant(name: str, spin: bool, views: bool, six: bool):
    class Variant(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, idx, extra):
            if spin:
                torch.cuda._sleep(160_000)
            out = torch.empty_like(q)
            if six:
                lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
                ctx.save_for_backward(q, k, v, idx, out, lse)
            else:
                ctx.save_for_backward(q, k, v)
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v = ctx.saved_tensors[:3]
            if views:
                g = torch.empty((3, *q.shape), device=q.device, dtype=q.dtype).unbind(0)
            else:
                g = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
            return (*g, None, None)

    Variant.__name__ = name
    Variant.forward = _stamped(Variant.forward, "f0", "f1")
    Variant.backward = _stamped(Variant.backward, "b0", "b1")
    return Variant


VARIANTS = [("no-op", False, False, False), ("+spin", True, False, False), ("+views", False, True, False),
            ("+six saved", False, False, True), ("+all three", True, True, True)]


def main():
    print(f"{'shape':22} {'impl':11} | " + " ".join(f"{p:>10}" for p in PIECES))
    for B, S, C, nw, topk in SHAPES[:2]:
        call, (q, k, v, go), leaves = fwd_bwd(B, S, C, nw, topk)
        for _ in range(5):
            call()
        idx = torch.zeros(B, nw * nw, topk, device="cuda", dtype=torch.int32)
        impls = [(name, _variant(name, *flags)) for name, *flags in VARIANTS]

        def fused(q, k, v):
            return ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32)
        for _ in range(3):
            for name, cls in impls:
                med = timeline(lambda q, k, v, cls=cls: cls.apply(q, k, v, idx, 0.5), leaves, go, None)
                print(f"B{B} {S}x{S} C{C} topk{topk}".ljust(22) + f" {name:11} | "
                      + " ".join(f"{x:10.1f}" for x in med), flush=True)
            med = timeline(fused, leaves, go, None)
            print(f"B{B} {S}x{S} C{C} topk{topk}".ljust(22) + f" {'fused':11} | "
                  + " ".join(f"{x:10.1f}" for x in med), flush=True)
    launch_bypass()


def launch_bypass():
    """A do-nothing kernel's direct launch through ``CudaLauncher.__call__`` (what BoundLaunch
    calls) against its C ``launch`` called straight (no scratch buffers to allocate)."""
    from probe50 import _kernel_with, issue_us
    from ops.common.tuning import Launcher
    x = torch.zeros(16, device="cuda", dtype=torch.int64)
    bound = Launcher(_kernel_with(8)).bind(("noop", 8), (1,), tuple(range(3, 11)), {})
    bound(x)
    torch.cuda.synchronize()
    run, g0, g1, g2, function, packed, device, tail = bound.direct
    print("launcher:", type(run).__name__, {a: getattr(run, a, "?") for a in (
        "global_scratch_size", "profile_scratch_size", "launch_cooperative_grid", "launch_pdl")})
    raw = torch._C._cuda_getCurrentRawStream
    c_launch = run.launch

    def straight():
        c_launch(g0, g1, g2, raw(device), function, run.launch_cooperative_grid, run.launch_pdl, None, None,
                 packed, None, None, None, x, *tail)
    straight()
    torch.cuda.synchronize()
    for _ in range(3):
        print(f"  bound {issue_us(lambda: bound(x)):5.1f} us, C launch straight {issue_us(straight):5.1f} us")


if __name__ == "__main__":
    main()
