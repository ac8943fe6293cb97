"""Probe (session 2, part 4): CPU-side profile of one BRA forward+backward (where the eager time goes)."""
import torch
from torch.profiler import profile, ProfilerActivity
import ops

B, S, C, nw, topk = 64, 56, 64, 7, 1
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v, go = (torch.randn(B, S, S, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))


def fb():
    for t in (qg, kg, vg):
        t.grad = None
    ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32).backward(go)


for _ in range(5):
    fb()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU], with_stack=True) as p:
    for _ in range(10):
        fb()
    torch.cuda.synchronize()
rows = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)[:30]
for e in rows:
    print(f"{e.self_cpu_time_total / 10 / 1e3:8.3f} ms self  {e.cpu_time_total / 10 / 1e3:8.3f} ms total  x{e.count // 10:<4d} {e.key[:110]}")
