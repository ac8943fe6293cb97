"""Probe (session 3): CPU cost of the pieces of one eager BRA forward+backward, and what a
launch through Triton's compiled-kernel runner (no binder, no key rebuilding) would save."""
import gc

import torch

import ops
import ops.common.block_sparse as bs
from ops.routing.kernels import region_topk

from bra_case import cpu_ms, C, fb, go, k, nw, q, qg, kg, vg, topk, v


class Ident(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, g):
        return torch.empty_like(g)


x = q.clone().requires_grad_(True)
idx = region_topk(q, k, (nw, nw), topk, C ** -0.5)
out, lse = bs.block_sparse_attention_forward(q, k, v, idx, (8, 8), 2, C ** -0.5)


def fb_fixed():
    for t in (qg, kg, vg):
        t.grad = None
    ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32, routing_indices=idx).backward(go)


def fwd_grad():
    ops.routing_attention(qg, kg, vg, nw, topk, scale=C ** -0.5, num_heads=C // 32)


rows = {
    "empty_like": lambda: torch.empty_like(q),
    "Ident fwd+bwd": lambda: Ident.apply(x).backward(go),
    "route": lambda: region_topk(q, k, (nw, nw), topk, C ** -0.5),
    "fwd kernel (launcher)": lambda: bs.block_sparse_attention_forward(q, k, v, idx, (8, 8), 2, C ** -0.5),
    "bwd kernels": lambda: bs.block_sparse_attention_backward(go, q, k, v, out, lse, idx, (8, 8), 2, C ** -0.5),
    "op fwd no grad": lambda: ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32),
    "op fwd, inputs need grad": fwd_grad,
    "op fwd+bwd": fb,
    "op fwd+bwd, given routing": fb_fixed,
}
for name, fn in rows.items():
    print(f"{name:30s} {cpu_ms(fn):.3f} ms CPU/call", flush=True)
gc.disable()
print(f"{'op fwd+bwd, gc off':30s} {cpu_ms(fb):.3f} ms CPU/call", flush=True)
gc.enable()

# Compiled-kernel runner: the CompiledKernel the jit returned, called with every parameter in
# signature order (constexprs included), bypassing binder + key + global checks.
launcher = bs._bs_fwd
key = next(iter(launcher.configs))
config = launcher.configs[key]
fn = launcher.autotuner.fn
o2, l2 = torch.empty_like(out), torch.empty_like(lse)
args = (q, k, v, o2, l2, idx, *q.stride(), *k.stride(), *v.stride(), *o2.stride(), *l2.stride(),
        idx.stride(0), idx.stride(1), 2, 7, 8, 8, 64, topk, 1, C ** -0.5 * bs.LOG2E)
meta = dict(HEAD_DIM=32, BLOCK_D=32, BLOCK_M=64, UPCAST=False, PRECISION="tf32")
grid = (49, 64 * 2)
compiled = fn[grid](*args, **meta, **config.all_kwargs())
torch.cuda.synchronize()
print("fwd equal after direct jit:", torch.equal(o2, out))
kw = {**meta, **config.kwargs}
full = list(args) + [kw[n] for n in fn.arg_names[len(args):]]
o2.fill_(float("nan"))
run = compiled.run
function, packed = compiled.function, compiled.packed_metadata
dev = torch.cuda.current_device()
get_stream = torch._C._cuda_getCurrentRawStream


def direct():
    run(grid[0], grid[1], 1, get_stream(dev), function, packed, None, None, None, *full)


direct()
torch.cuda.synchronize()
print("fwd equal after compiled.run:", torch.equal(o2, out))
print(f"{'jit fn[grid] (binder path)':30s} {cpu_ms(lambda: fn[grid](*args, **meta, **config.all_kwargs())):.3f} ms")
print(f"{'Launcher launch':30s} {cpu_ms(lambda: launcher[grid](*args, **meta)):.3f} ms")
print(f"{'compiled.run direct':30s} {cpu_ms(direct):.3f} ms")
print(f"{'compiled[grid](*full)':30s} {cpu_ms(lambda: compiled[grid](*full)):.3f} ms")
