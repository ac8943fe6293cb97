"""The BRA case the CPU-time probes share: B64 56x56 C64 topk1 in bf16, one eager
forward+backward (``fb``) of the fused op on it, and ``cpu_ms`` (CPU time per call, launches
not waited for)."""
import time

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


def cpu_ms(fn, n=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    c = (time.perf_counter() - t) / n * 1e3
    torch.cuda.synchronize()
    return c
