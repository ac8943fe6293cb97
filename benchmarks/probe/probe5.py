"""Probe (session 2, part 5): is BRA's backward body slower on the autograd device thread than on
the main thread? Times the same function both ways (CPU time per call, GPU queue not waited on)."""
import time
import torch
import ops
import ops.common.block_sparse as bs

B, S, C, nw, topk = 64, 56, 64, 7, 1
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v, go = (torch.randn(B, S, S, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
spent = {"autograd thread": 0.0, "calls": 0}
orig = bs.block_sparse_attention_backward


def timed(*a, **kw):
    t = time.perf_counter()
    r = orig(*a, **kw)
    spent["autograd thread"] += time.perf_counter() - t
    spent["calls"] += 1
    return r


bs.block_sparse_attention_backward = timed


def fb():
    for t in (qg, kg, vg):
        t.grad = None
    ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32).backward(go)


for _ in range(5):
    fb()
torch.cuda.synchronize()
spent.update({"autograd thread": 0.0, "calls": 0})
t0 = time.perf_counter()
for _ in range(20):
    fb()
total = (time.perf_counter() - t0) / 20
torch.cuda.synchronize()
print(f"fwd+bwd CPU per call {total * 1e3:.3f} ms; block_sparse_attention_backward on the autograd thread "
      f"{spent['autograd thread'] / spent['calls'] * 1e3:.3f} ms/call")
idx = ops.routing.kernels.region_topk(q, k, (nw, nw), topk, C ** -0.5)
out, lse = bs.block_sparse_attention_forward(q, k, v, idx, (8, 8), 2, C ** -0.5)
for _ in range(5):
    orig(go, q, k, v, out, lse, idx, (8, 8), 2, C ** -0.5)
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(20):
    orig(go, q, k, v, out, lse, idx, (8, 8), 2, C ** -0.5)
print(f"block_sparse_attention_backward on the main thread {(time.perf_counter() - t0) / 20 * 1e3:.3f} ms/call")
torch.cuda.synchronize()
with torch.no_grad():
    t0 = time.perf_counter()
    for _ in range(20):
        ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32)
    print(f"forward only (no grad) CPU per call {(time.perf_counter() - t0) / 20 * 1e3:.3f} ms")
