"""``foveal bench bra``: bi-level routing attention, fused kernel vs the official gather algorithm.

Both implementations include the region routing (region means, affinity, top-k); they differ
in token attention: foveal reads the routed regions by address, the official code gathers
them into a [B, R, topk, T, C] copy. Forward and forward+backward; on CUDA the runner adds
peak and extra memory per implementation (fwd+bwd extra memory includes the q/k/v gradients).
On CUDA both also run replayed from CUDA graphs ("... (CUDA graph)" rows): at these sizes an
eager call is bound by its CPU launch cost, the graphs show the GPU work alone.
"""
from __future__ import annotations

import torch

import ops
from ops.routing import region_routing, routing_attention_reference

from ..runner import Case, register_suite
from .peers import with_graphs

# (batch, size, channels, n_win, topk): BiFormer stages 1-3 at 224 (n_win 7) and a
# segmentation-size stage-2 map (128x128 divides by n_win 8, regions of 16x16 tokens).
GPU_CASES = [(64, 56, 64, 7, 1), (64, 28, 128, 7, 4), (64, 14, 256, 7, 16), (8, 128, 64, 8, 4)]
CPU_CASES = [(2, 28, 64, 7, 4)]
HEAD_DIM = 32


def _gather(q, k, v, n_win, topk, heads, scale):
    idx = region_routing(q, k, (n_win, n_win), topk, scale)
    return routing_attention_reference(q, k, v, idx, (n_win, n_win), heads, scale)


def _fused(q, k, v, n_win, topk, heads, scale):
    return ops.routing_attention(q, k, v, n_win, topk, scale=scale, num_heads=heads)


def _fwd_bwd(fn, q, k, v, grad, *args):
    def call():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v, *args).backward(grad)
    return call


@register_suite("bra")
def bra_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    cases = []
    for batch, size, channels, n_win, topk in GPU_CASES if device == "cuda" else CPU_CASES:
        heads = channels // HEAD_DIM
        scale = channels ** -0.5  # BiFormer's qk_dim ** -0.5
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v, g = (torch.randn(batch, size, size, channels, device=device, dtype=dtype, generator=gen)
                      for _ in range(4))
        args = (n_win, topk, heads, scale)
        tokens = (size // n_win) ** 2
        fwd_flops = 4.0 * batch * size * size * topk * tokens * channels
        in_bytes = 3.0 * q.numel() * q.element_size()
        shapes = {"q": [batch, size, size, channels], "n_win": n_win, "topk": topk, "heads": heads}
        notes = {"input_gib": in_bytes / 2**30, "region_tokens": tokens}
        impls = {"foveal": lambda q=q, k=k, v=v, a=args: _fused(q, k, v, *a),
                 "gather (official)": lambda q=q, k=k, v=v, a=args: _gather(q, k, v, *a)}
        cases.append(Case(
            name=f"bra fwd B{batch} {size}x{size} C{channels} topk{topk}", shapes=shapes,
            impls=with_graphs(impls, device), flops=fwd_flops, bytes=in_bytes * 4 / 3,
            notes=dict(notes, direction="forward")))
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
        impls = {"foveal": _fwd_bwd(_fused, qg, kg, vg, g, *args),
                 "gather (official)": _fwd_bwd(_gather, qg, kg, vg, g, *args)}
        cases.append(Case(
            name=f"bra fwd+bwd B{batch} {size}x{size} C{channels} topk{topk}", shapes=shapes,
            impls=with_graphs(impls, device), flops=3.5 * fwd_flops, bytes=in_bytes * 8 / 3,
            notes=dict(notes, direction="forward+backward")))
    return cases
