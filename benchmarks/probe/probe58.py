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
import sys

import torch

import ops
from ab import eager_host_ab, load_base
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
        m = eager_host_ab(fb, fn, ib, inn, calls=40)
        print(f"B{B} {S}x{S} C{C} topk{topk:<3d}".ljust(22) + f" | {m['fb_b']:6.1f}, {m['fb_n']:6.1f} ({m['fb_n'] / m['fb_b']:.2f})"
              f"     | {m['inf_b']:6.1f}, {m['inf_n']:6.1f} ({m['inf_n'] / m['inf_b']:.2f})"
              f"   | {m['ms_b']:.3f}, {m['ms_n']:.3f} ({m['ms_n'] / m['ms_b']:.2f})", flush=True)


if __name__ == "__main__":
    main()
