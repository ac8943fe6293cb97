"""Probe (session 12): host cost A/B of NA's eager calls, this tree's ``ops`` against another copy
of ``ops`` in the same process (see ``ab.py``), on small maps where the host decides the time
and on the bench's backbone case.

Per shape, alternating base and this tree 5 times: CPU us per call (launches not waited for) of
a bf16 forward+backward and of an inference forward, and do_bench ms of the forward+backward;
medians. The gradients of both copies are compared bit for bit.

    git worktree add /tmp/base <commit> && python benchmarks/probe/probe34.py /tmp/base/ops
"""
import sys

import torch

import ops
from ab import eager_host_ab, load_base  # the script's folder is on sys.path

# (name, q shape [B, *spatial, H, D], kernel_size)
SHAPES = [("na1d B1 L1024 H4 D64 k7", (1, 1024, 4, 64), 7),
          ("na2d B1 28x28 H4 D32 k7", (1, 28, 28, 4, 32), 7),
          ("na2d B1 56x56 H4 D32 k7", (1, 56, 56, 4, 32), 7),
          ("na3d B1 4x16x16 H4 D64 k3x7x7", (1, 4, 16, 16, 4, 64), (3, 7, 7)),
          ("na2d backbone B64 56x56 H4 D32 k7", (64, 56, 56, 4, 32), 7)]


def calls(op, shape, kernel_size):
    """(forward+backward, inference forward, leaves) of ``op`` on fresh seed-0 bf16 tensors."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, go = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    leaves = tuple(t.clone().requires_grad_(True) for t in (q, k, v))

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        op(*leaves, kernel_size=kernel_size).backward(go)

    def infer():
        with torch.no_grad():
            op(q, k, v, kernel_size=kernel_size)
    return fwd_bwd, infer, leaves


def main():
    base = load_base(sys.argv[1])
    print("shape                              | CPU us fwd+bwd base, this | CPU us infer base, this"
          " | fwd+bwd ms base, this | grads equal")
    for name, shape, ks in SHAPES:
        fb_b, inf_b, lb = calls(base.neighborhood_attention, shape, ks)
        fb_n, inf_n, ln = calls(ops.neighborhood_attention, shape, ks)
        fb_b(), fb_n(), inf_b(), inf_n()
        same = all(torch.equal(a.grad, b.grad) for a, b in zip(lb, ln))
        m = eager_host_ab(fb_b, fb_n, inf_b, inf_n)
        print(f"{name:<35}| {m['fb_b']:6.0f} {m['fb_n']:6.0f}             | {m['inf_b']:6.0f} {m['inf_n']:6.0f}"
              f"           | {m['ms_b']:.3f} {m['ms_n']:.3f}          | {same}", flush=True)


main()
