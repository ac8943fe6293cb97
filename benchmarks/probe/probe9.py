"""Probe (session 3): where does an eager BRA forward+backward spend its CPU time? Timestamps at
the boundaries of each step, on the main thread and on the autograd device thread, averaged over
many calls (launches are asynchronous, so these are CPU times)."""
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


def bwd_body(grad_out, q, k, v, out, lse, kv_index, tile, num_heads, scale):
    """block_sparse_attention_backward with marks between its steps."""
    B, Y, X, Cc = q.shape
    th, tw = tile
    tiles_x = X // tw
    n_tiles = (Y // th) * tiles_x
    nq, nk = kv_index.shape[1], kv_index.shape[2]
    head_dim = Cc // num_heads
    Tt = th * tw
    idx = kv_index.to(torch.int32).contiguous()
    lse = lse.contiguous()
    mark("b: prologue")
    delta = torch.empty_like(lse)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    mark("b: 4 allocs")
    block = bs._tile_block(Tt)
    common = dict(HEAD_DIM=head_dim, BLOCK_D=bs._block_d(head_dim), UPCAST=bs._upcast(q), PRECISION=bs._precision(q))
    q_split = bs.cdiv(Tt, block)
    mark("b: meta")
    bs._bs_bwd_dq[(nq * q_split, B * num_heads)](
        q, k, v, out, grad_out, dq, lse, delta, idx, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *grad_out.stride(), *dq.stride(), *lse.stride(), idx.stride(0), idx.stride(1),
        num_heads, tiles_x, th, tw, Tt, nk, q_split, scale, BLOCK_M=block, **common)
    mark("b: dq launch")
    src, ptr = bs.inverse_index(idx, n_tiles)
    mark("b: inverse (2 allocs + launch)")
    kv_split = bs.cdiv(Tt, block)
    bs._bs_bwd_dkv[(n_tiles * kv_split, B * num_heads)](
        q, k, v, grad_out, dk, dv, lse, delta, src, ptr, *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(),
        *dk.stride(), *dv.stride(), *lse.stride(), src.stride(0), ptr.stride(0),
        num_heads, tiles_x, th, tw, Tt, kv_split, scale, BLOCK_N=block, **common)
    mark("b: dkv launch")
    return dq, dk, dv


bs.block_sparse_attention_forward = fwd_kernel
routing._bra_backward_impl = bwd_impl
bs.block_sparse_attention_backward = bwd_body
order = ["call", "fwd kernel in", "fwd kernel out", "fwd returned", "bwd impl in", "b: prologue", "b: 4 allocs",
         "b: meta", "b: dq launch", "b: inverse (2 allocs + launch)", "b: dkv launch", "bwd impl out", "backward() returned"]


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
