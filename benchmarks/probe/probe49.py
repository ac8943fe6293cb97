"""Probe (session 20): a timeline of the host's time in one eager BRA forward+backward.

bench bra's eager forward+backward rows are bound by the host's CPU, and their "CPU ms" moves
between runs far more than the host's trivial backward does (s20: 0.42-0.49 ms on the B64 56x56
and 28x28 shapes against 0.24-0.27 in s19's final run, on hosts of similar speed). This stamps
``time.perf_counter_ns`` at every hand-over of one call, with the GPU idle before it (as the
bench's "CPU ms") and after a 256 MB zeroing like ``do_bench``'s cache flush:

    call -> [pre] Function.forward -> [fwd] return -> [post] .backward() -> [engine in]
    Function.backward -> [bwd body] return -> [engine out] .backward() returns

for the fused op and for a do-nothing ``autograd.Function`` on the same leaves (the engine's
floor). Medians over 60 calls, three rounds.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe49.py
"""
import statistics
import time

import torch

import ops
import ops.routing.eager as eager
from bra_case import SHAPES, Noop, fwd_bwd
from tasks.bench.runner import _issue_ms

ns = time.perf_counter_ns
stamps: dict[str, int] = {}


def _stamped(fn, before: str, after: str):
    def wrapped(ctx, *args):
        stamps[before] = ns()
        out = fn(ctx, *args)
        stamps[after] = ns()
        return out
    return staticmethod(wrapped)


for cls in (eager._RoutedAttention, Noop):
    cls.forward = _stamped(cls.forward, "f0", "f1")
    cls.backward = _stamped(cls.backward, "b0", "b1")

PIECES = ["pre", "fwd", "post", "engine in", "bwd body", "engine out", "total"]


def timeline(forward, leaves, go, flush: torch.Tensor | None, n: int = 60) -> list[float]:
    """Median us of each piece of ``forward(*leaves).backward(go)`` (grads cleared first)."""
    rows = []
    for _ in range(n):
        for t in leaves:
            t.grad = None
        torch.cuda.synchronize()
        if flush is not None:
            flush.zero_()
        stamps.clear()
        t0 = ns()
        out = forward(*leaves)
        t1 = ns()
        out.backward(go)
        t2 = ns()
        s = stamps
        rows.append([s["f0"] - t0, s["f1"] - s["f0"], t1 - s["f1"], s["b0"] - t1, s["b1"] - s["b0"], t2 - s["b1"],
                     t2 - t0])
    torch.cuda.synchronize()
    return [statistics.median(col) / 1e3 for col in zip(*rows)]


def main():
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    host = torch.randn(64, device="cuda", requires_grad=True)

    def host_us():
        return _issue_ms(lambda: (host * 1.0).sum().backward(), 200) * 1e3

    print(f"host: trivial backward {host_us():.0f} us (idle GPU)")
    print(f"{'shape':22} {'impl':8} {'GPU':6} | " + " ".join(f"{p:>10}" for p in PIECES))
    for B, S, C, nw, topk in SHAPES:
        call, (q, k, v, go), leaves = fwd_bwd(B, S, C, nw, topk)
        for _ in range(5):
            call()

        def fused(q, k, v):
            return ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32)
        for rnd in range(3):
            for name, fwd in (("fused", fused), ("no-op", Noop.apply)):
                for label, fl in (("idle", None), ("flush", flush)):
                    med = timeline(fwd, leaves, go, fl)
                    print(f"B{B} {S}x{S} C{C} topk{topk}".ljust(22) + f" {name:8} {label:6} | "
                          + " ".join(f"{x:10.1f}" for x in med), flush=True)
    print(f"host: trivial backward {host_us():.0f} us (idle GPU)")


if __name__ == "__main__":
    main()
