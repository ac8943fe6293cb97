"""Probe (session 7, for the next GPU session): where ``test_routing.py::
test_public_op_routed_padded_noncontiguous`` goes wrong on the H200 (it passes under the CPU
interpreter, triton 3.8 and 3.6). Its case (B1 7x9 C64, 2 heads, 2x3 regions, top-2, fp32, q/k/v
channel slices of one qkv tensor, padded to 8x9) over several seeds, each part apart:

1. routing: the fused top-k (``_bra_route_call``) against ``region_routing`` in fp64, with the
   fp64 affinity gap at the top-k boundary (a near tie explains a flip);
2. attention forward with the fp64 routing given (``routing_indices``), against the reference;
3. the gradients of q, k, v (through the qkv slices) against the reference's.

Relative Frobenius errors, as the tests compute them (fp32 tolerance 2e-5).
Run as ``FOVEAL_QUICK_TUNE=1 python benchmarks/probe/probe17.py`` to match the test run.
"""
import torch
import torch.nn.functional as F

import ops
from ops.routing.reference import region_routing, routing_attention_reference, to_regions


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


DEV = "cuda" if torch.cuda.is_available() else "cpu"   # cpu: run under TRITON_INTERPRET=1
B, Y, X, C, heads, n, topk = 1, 7, 9, 64, 2, (2, 3), 2
scale = (C // heads) ** -0.5
for seed in range(6):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    qkv = torch.randn(B, Y, X, 3 * C, device=DEV, generator=gen).requires_grad_(True)
    q, k, v = qkv.split(C, dim=-1)
    out, idx = ops.routing_attention(q, k, v, n, topk, num_heads=heads, return_indices=True)

    qkv64 = qkv.detach().double().requires_grad_(True)
    q64, k64, v64 = F.pad(qkv64, (0, 0, 0, 0, 0, 1)).split(C, dim=-1)
    idx64 = region_routing(q64, k64, n, topk, scale)
    aff = (to_regions(q64, n).mean(2) * scale) @ to_regions(k64, n).mean(2).transpose(-1, -2)
    top = aff.sort(-1, descending=True).values
    gap = (top[..., topk - 1] - top[..., topk]).abs().min().item()
    same = torch.equal(idx.sort(-1).values, idx64.sort(-1).values)

    g = torch.randn(B, Y, X, C, device=DEV, generator=gen)
    qkv.grad = None
    out2 = ops.routing_attention(q, k, v, n, topk, num_heads=heads, routing_indices=idx64.to(torch.int64))
    out2.backward(g)
    grad_given = qkv.grad.clone()
    ref = routing_attention_reference(q64, k64, v64, idx64, n, heads, scale)[:, :Y, :X]
    ref.backward(g.double())
    grads = " ".join(f"d{name} {rel(grad_given[..., i * C:(i + 1) * C], qkv64.grad[..., i * C:(i + 1) * C]):.2e}"
                     for i, name in enumerate("qkv"))
    print(f"seed {seed}: routing equal {same} (fp64 top-k gap {gap:.2e}) | out (own routing) "
          f"{rel(out, ref) if same else float('nan'):.2e} | out (given routing) {rel(out2, ref):.2e} | "
          f"{grads} | finite {bool(torch.isfinite(grad_given).all())}", flush=True)
