"""The BRA cases the probes share: ``SHAPES`` (the bench's four), ``fwd_bwd`` (one eager bf16
forward+backward of the fused op on fresh maps of a shape), ``noop_fwd_bwd`` (the same call
shape through a do-nothing ``autograd.Function``: the autograd engine's host floor), the CPU-time probes' case
B64 56x56 C64 topk1 (``fb`` and its tensors) and ``ab.cpu_ms`` (CPU time per call, launches not
waited for), re-exported."""
import torch

import ops
from ab import cpu_ms  # noqa: F401  (the probes import it from here too)

# (batch, size, channels, n_win, topk): BiFormer stages 1-3 at 224 and a 128x128 map
SHAPES = [(64, 56, 64, 7, 1), (64, 28, 128, 7, 4), (64, 14, 256, 7, 16), (8, 128, 64, 8, 4)]


def fwd_bwd(B: int, S: int, C: int, nw: int, topk: int, op=ops.routing_attention):
    """(call, (q, k, v, grad), leaves): ``call()`` runs one eager forward+backward of ``op``
    (``ops.routing_attention`` or another copy's; BiFormer's C ** -0.5 scale, 32-channel heads)
    on the leaves, clones of seed-0 random bf16 maps [B, S, S, C]."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, go = (torch.randn(B, S, S, C, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    leaves = tuple(t.clone().requires_grad_(True) for t in (q, k, v))

    def call():
        for t in leaves:
            t.grad = None
        op(*leaves, nw, topk, scale=C ** -0.5, num_heads=C // 32).backward(go)
    return call, (q, k, v, go), leaves


class Noop(torch.autograd.Function):
    """q, k, v -> an empty output; backward: empty gradients. No work, only autograd's."""
    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return torch.empty_like(q)

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def noop_fwd_bwd(leaves, go):
    """``fwd_bwd``'s call shape (grads cleared, one forward, ``backward(go)``) through :class:`Noop`."""
    def call():
        for t in leaves:
            t.grad = None
        Noop.apply(*leaves).backward(go)
    return call


B, S, C, nw, topk = SHAPES[0]
fb, (q, k, v, go), (qg, kg, vg) = fwd_bwd(B, S, C, nw, topk)
