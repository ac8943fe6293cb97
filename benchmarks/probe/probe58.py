"""Probe (session 22): the eager BRA call's host cost, this tree's ``ops`` against another copy
(``ab.py``), same process, alternating, on the bench's four shapes (bf16, BiFormer's scale and
32-channel heads).

Session 22's program (``ops/routing/eager.py``) takes the call's indices, LSE, region means and
backward workspace from one float32 buffer, passes compiled launches raw addresses (no typed views
of that buffer, no per-pointer driver query in Triton's launcher) and saves four tensors on its
node instead of six: two allocations in the forward instead of four, one in the backward instead
of two. Per shape: CPU us per eager forward+backward and per inference forward (``ab.cpu_ms``:
calls issued back to back, launches not waited for), and the do_bench ms of the forward+backward
(as ``bench bra``'s eager row), medians of alternations; outputs and gradients must be equal.

    cd benchmarks/probe && PYTHONPATH=../..:. python probe58.py <ops copy>
"""
import statistics
import sys

import torch
from triton.testing import do_bench

import ops
from ab import cpu_ms, load_base
from bra_case import SHAPES, fwd_bwd


def main():
    base = load_base(sys.argv[1])
    print("shape                  | fwd+bwd CPU us base, this | infer CPU us base, this | fwd+bwd do_bench ms base, this")
    for B, S, C, nw, topk in SHAPES:
        fb, (q, k, v, go), leaves_b = fwd_bwd(B, S, C, nw, topk, op=base.routing_attention)
        fn, _, leaves_n = fwd_bwd(B, S, C, nw, topk)
        fb(), fn()
        for a, b in zip(leaves_b, leaves_n):
            assert torch.equal(a.grad, b.grad), "gradients differ"
        kw = dict(scale=C ** -0.5, num_heads=C // 32)

        def ib():
            with torch.no_grad():
                base.routing_attention(q, k, v, nw, topk, **kw)

        def inn():
            with torch.no_grad():
                ops.routing_attention(q, k, v, nw, topk, **kw)
        assert torch.equal(base.routing_attention(q, k, v, nw, topk, **kw), ops.routing_attention(q, k, v, nw, topk, **kw))
        rows = {name: [] for name in ("cb", "cn", "ib", "in", "tb", "tn")}
        for _ in range(5):
            rows["cb"].append(cpu_ms(fb, 40) * 1e3)
            rows["cn"].append(cpu_ms(fn, 40) * 1e3)
            rows["ib"].append(cpu_ms(ib, 40) * 1e3)
            rows["in"].append(cpu_ms(inn, 40) * 1e3)
            rows["tb"].append(do_bench(fb, warmup=10, rep=60))
            rows["tn"].append(do_bench(fn, warmup=10, rep=60))
        m = {key: statistics.median(val) for key, val in rows.items()}
        print(f"B{B} {S}x{S} C{C} topk{topk:<3d}".ljust(22) + f" | {m['cb']:6.1f}, {m['cn']:6.1f} ({m['cn'] / m['cb']:.2f})"
              f"     | {m['ib']:6.1f}, {m['in']:6.1f} ({m['in'] / m['ib']:.2f})"
              f"   | {m['tb']:.3f}, {m['tn']:.3f} ({m['tn'] / m['tb']:.2f})", flush=True)


if __name__ == "__main__":
    main()
