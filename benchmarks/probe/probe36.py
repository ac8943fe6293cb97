"""Probe (session 14): where the CPU time of one eager BRA forward+backward goes, per bench shape.

The bench's "CPU ms" column (s13-run4) has 56x56 at 0.53 ms and 128x128 at 0.38 ms against 0.25 ms
for 28x28 and 14x14, with the same launches and Python per call. Each figure here is the median
CPU time of one call issued with the GPU idle (synchronized before, not waited for), like the
bench's column: the whole call, its pieces (routing + forward under autograd, the program's
backward body, its two launches with preallocated buffers, the gradient allocation), a
do-nothing ``autograd.Function``, and whether every bound launch goes straight to its compiled
kernel (``direct``).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe36.py
"""
import statistics

import torch

import ops
from bra_case import SHAPES, cpu_ms, fwd_bwd, noop_fwd_bwd
from ops.routing.eager import program_for
from tasks.bench.runner import _issue_ms


def issue_us(fn, n: int = 50) -> float:
    """Median CPU us of one call of ``fn`` started on an idle GPU (the bench's ``cpu_ms``)."""
    return _issue_ms(fn, n) * 1e3


def main():
    host = torch.randn(64, device="cuda", requires_grad=True)
    host_fn = lambda: (host * 1.0).sum().backward()  # noqa: E731
    print(f"host: trivial backward {issue_us(host_fn, 200):.0f} us (idle-GPU issue time)")
    print("shape                 | direct (mean rank fwd dq dkv) | CPU us: call, fwd, bwd body, bwd launches, "
          "grad alloc, no-op Function")
    for B, S, C, nw, topk in SHAPES:
        call, (q, k, v, go), leaves = fwd_bwd(B, S, C, nw, topk)
        for _ in range(5):
            call()
        heads, scale = C // 32, C ** -0.5
        prog = program_for(*leaves, (nw, nw), topk, heads, scale)
        direct = [int(b.direct is not None) for b in (prog.mean, prog.rank, prog.fwd, prog.dq, prog.dkv)]
        idx = prog.route(q, k)
        out, lse = prog.forward(q, k, v, idx)
        dq, dk, dv = (torch.empty_like(q) for _ in range(3))
        ws = torch.empty(prog.ws_numel, device="cuda", dtype=torch.float32)

        def fwd_only():
            ops.routing_attention(*leaves, nw, topk, scale=scale, num_heads=heads)

        def bwd_body():
            prog.backward(go, q, k, v, out, lse, idx)

        def bwd_launches():
            prog.dq(q, k, v, out, go, dq, lse, ws, idx)
            prog.dkv(q, k, v, go, dk, dv, lse, ws)

        def grad_alloc():
            torch.empty((3, *prog.shape), device="cuda", dtype=prog.dtype).unbind(0)

        floor = noop_fwd_bwd(leaves, go)
        figures = [statistics.median(issue_us(f) for _ in range(3))
                   for f in (call, fwd_only, bwd_body, bwd_launches, grad_alloc, floor)]
        print(f"B{B} {S}x{S} C{C} topk{topk}".ljust(22) + f"| {direct}               | "
              + " ".join(f"{x:6.0f}" for x in figures), flush=True)
        # the same call with the GPU kept busy (back-to-back, as do_bench's loop issues them)
        busy = cpu_ms(call, 50) * 1e3
        print(f"{'':22}| back-to-back: {busy:.0f} us per call", flush=True)
    print(f"host: trivial backward {issue_us(host_fn, 200):.0f} us (idle-GPU issue time)")


main()
