"""Probe (session 3): where does an eager BRA forward+backward spend its CPU time? Timestamps at
the boundaries of each step, on the main thread and on the autograd device thread, averaged over
many calls (launches are asynchronous, so these are CPU times). The finer split inside the
backward in ``probe-bra-autograd-*.txt`` came from a copy of its body (commit dede5e9); this
version times the body as a whole."""
import collections
import time

import torch

import ops
import ops.common.block_sparse as bs
import ops.routing as routing
from bra_case import C, go, nw, qg, kg, vg, topk

T = collections.defaultdict(float)
now = time.perf_counter
marks = {}


def mark(name):
    marks[name] = now()


orig_bwd_impl = routing._bra_backward_impl
orig_fwd = bs.block_sparse_attention_forward


def fwd_kernel(*a):   # looked up at call time by the op's forward body
    mark("fwd kernel in")
    r = orig_fwd(*a)
    mark("fwd kernel out")
    return r


def bwd_impl(*a):
    mark("bwd impl in")
    r = orig_bwd_impl(*a)
    mark("bwd impl out")
    return r


orig_bwd_body = bs.block_sparse_attention_backward


def bwd_body(*a, **kw):
    """block_sparse_attention_backward, timed as a whole."""
    mark("b: body in")
    r = orig_bwd_body(*a, **kw)
    mark("b: body out")
    return r


routing._bra_backward_impl = bwd_impl
bs.block_sparse_attention_backward = bwd_body
order = ["call", "fwd kernel in", "fwd kernel out", "fwd returned", "bwd impl in", "b: body in", "b: body out",
         "bwd impl out", "backward() returned"]


def step(record):
    for t in (qg, kg, vg):
        t.grad = None
    mark("call")
    out = ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32)
    mark("fwd returned")
    out.backward(go)
    mark("backward() returned")
    if record:
        for a, b in zip(order, order[1:]):
            T[f"{a} -> {b}"] += marks[b] - marks[a]


for _ in range(10):
    step(False)
torch.cuda.synchronize()
n = 100
t0 = now()
for _ in range(n):
    step(True)
total = (now() - t0) / n
torch.cuda.synchronize()
print(f"per fwd+bwd {total * 1e3:.3f} ms CPU; steps (ms):")
for k_, v_ in T.items():
    print(f"  {v_ / n * 1e3:7.3f}  {k_}")


class Like(torch.autograd.Function):
    """BRA's autograd shape without its work: 3 grad inputs + 4 other args, 2 outputs, 6 saved."""

    @staticmethod
    def forward(ctx, q, k, v, idx, regions, heads, scale):
        ctx.set_materialize_grads(False)
        out, lse = torch.empty_like(q), torch.empty(q.shape[:3], device=q.device)
        ctx.save_for_backward(q, k, v, idx, out, lse)
        return out, lse

    @staticmethod
    def backward(ctx, g, gl):
        q, k, v, idx, out, lse = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), None, None, None, None


idx = torch.zeros(64, 49, 1, dtype=torch.int32, device="cuda")


def like():
    for t in (qg, kg, vg):
        t.grad = None
    Like.apply(qg, kg, vg, idx, [7, 7], 2, 0.1)[0].backward(go)


for _ in range(10):
    like()
torch.cuda.synchronize()
t0 = now()
for _ in range(n):
    like()
print(f"same autograd shape, no work: {(now() - t0) / n * 1e3:.3f} ms per fwd+bwd")
torch.cuda.synchronize()
