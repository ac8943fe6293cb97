"""The BRA case the CPU-time probes share: B64 56x56 C64 topk1 in bf16, and one eager
forward+backward (``fb``) of the fused op on it."""
import torch

import ops

B, S, C, nw, topk = 64, 56, 64, 7, 1
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v, go = (torch.randn(B, S, S, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))


def fb():
    for t in (qg, kg, vg):
        t.grad = None
    ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32).backward(go)
