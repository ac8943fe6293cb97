"""Probe (session 3): where the eager BRA forward+backward's CPU time goes once launches are
direct: forward call, backward() call and the backward body timed separately; the autograd
engine on its device thread vs on the calling thread; the same for a trivial Function."""
import time

import torch

import ops
import ops.routing as routing
from bra_case import cpu_ms, C, fb, go, nw, q, qg, kg, vg, topk


parts = {"forward": 0.0, "backward()": 0.0, "backward body": 0.0, "n": 0}
orig_impl = routing._bra_backward_impl


def timed_impl(*a):
    t = time.perf_counter()
    r = orig_impl(*a)
    parts["backward body"] += time.perf_counter() - t
    return r


def fb_split():
    for t in (qg, kg, vg):
        t.grad = None
    t0 = time.perf_counter()
    out = ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32)
    t1 = time.perf_counter()
    out.backward(go)
    t2 = time.perf_counter()
    parts["forward"] += t1 - t0
    parts["backward()"] += t2 - t1
    parts["n"] += 1


routing._bra_backward_impl = timed_impl
for _ in range(5):
    fb_split()
torch.cuda.synchronize()
parts.update({"forward": 0.0, "backward()": 0.0, "backward body": 0.0, "n": 0})
t = time.perf_counter()
for _ in range(50):
    fb_split()
total = (time.perf_counter() - t) / 50 * 1e3
torch.cuda.synchronize()
n = parts.pop("n")
print(f"fwd+bwd {total:.3f} ms/call: " + ", ".join(f"{k} {v / n * 1e3:.3f}" for k, v in parts.items()), flush=True)
routing._bra_backward_impl = orig_impl

print(f"op fwd+bwd                       {cpu_ms(fb):.3f} ms")
with torch.autograd.set_multithreading_enabled(False):
    print(f"op fwd+bwd, engine on caller     {cpu_ms(fb):.3f} ms")


def sync_each():
    fb()
    torch.cuda.synchronize()


print(f"op fwd+bwd, synchronized each    {cpu_ms(sync_each):.3f} ms")
print(f"op fwd only                      "
      f"{cpu_ms(lambda: ops.routing_attention(q, q, q, nw, topk, scale=C ** -0.5, num_heads=C // 32)):.3f} ms")


class Ident(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 1

    @staticmethod
    def backward(ctx, g):
        return g * 1


x = q.clone().requires_grad_(True)
print(f"Ident (one aten op each way)     {cpu_ms(lambda: Ident.apply(x).backward(go)):.3f} ms")
with torch.autograd.set_multithreading_enabled(False):
    print(f"Ident, engine on caller          {cpu_ms(lambda: Ident.apply(x).backward(go)):.3f} ms")
