"""``foveal bench gla``: gated linear attention against flash-linear-attention and dense attention.

Cases are BENCHMARKS.md's GLA rows: ViG at 224 (B8 T3136 H6 D64) and a long sequence (B4 T16384
H8 D64), forward and forward+backward. Rows:
- ``foveal``: bidirectional, both directions with their own gates in one op call (ViG's BiGLA);
- ``foveal causal``: one direction, like for like with fla;
- ``fla causal``: flash-linear-attention's ``chunk_gla`` (``fla-core``), one direction;
- ``fla bidir (ViG recipe)``: what ViG does with it: the sequence and its flip stacked on the
  batch, one ``chunk_gla`` call, the halves averaged;
- dense SDPA (cuDNN, flash) over all tokens, the softmax attention GLA replaces.
``bytes`` is one pass over the inputs and the output (q, k, v, the gates, o), for GB/s.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import ops

from ..runner import Case, register_suite
from .peers import dense_peers, with_backward

GPU_CASES = [(8, 3136, 6, 64), (4, 16384, 8, 64)]
CPU_CASES = [(1, 256, 2, 32)]


def _fla():
    try:
        from fla.ops.gla import chunk_gla
    except Exception as err:   # not installed, or built for another torch/triton
        return None, f"flash-linear-attention is not importable here ({type(err).__name__}: {err})"[:200]
    return chunk_gla, None


def _fla_bidirectional(chunk_gla, q, k, v, g, rg, scale):
    """ViG's recipe around fla: [x, flip(x)] on the batch axis, each half with its own gates."""
    B = q.shape[0]
    cat = [torch.cat([t, t.flip(1)]) for t in (q, k, v)]
    o, _ = chunk_gla(*cat, torch.cat([g, rg.flip(1)]), scale=scale)
    return (o[:B] + o[B:].flip(1)) / 2


@register_suite("gla")
def gla_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    chunk_gla, why = _fla() if device == "cuda" else (None, "fla runs on CUDA only")
    cases = []
    for B, T, H, D in GPU_CASES if device == "cuda" else CPU_CASES:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v, do = (torch.randn(B, T, H, D, device=device, dtype=dtype, generator=gen) for _ in range(4))
        g, rg = (F.logsigmoid(torch.randn(B, T, H, D, device=device, dtype=dtype, generator=gen)) / 16
                 for _ in range(2))
        scale = D ** -0.5
        shapes = {"q": [B, T, H, D], "v": [B, T, H, D]}
        io = 5 * q.numel() * q.element_size()          # q, k, v, one gate, o

        def impls(q, k, v, g, rg):
            out = {
                "foveal": lambda: ops.gated_linear_attention(q, k, v, g, 0.5 * scale, "bidirectional", rg),
                "foveal causal": lambda: ops.gated_linear_attention(q, k, v, g, scale),
            }
            if chunk_gla is None:
                out["fla causal"] = why
                out["fla bidir (ViG recipe)"] = why
            else:
                out["fla causal"] = lambda: chunk_gla(q, k, v, g, scale=scale)[0]
                out["fla bidir (ViG recipe)"] = lambda: _fla_bidirectional(chunk_gla, q, k, v, g, rg, scale)
            out.update(dense_peers(q, k, v, device))
            return out

        cases.append(Case(name=f"gla fwd B{B} T{T} H{H} D{D}", shapes=shapes, impls=impls(q, k, v, g, rg),
                          bytes=io, notes={"direction": "forward", "gates": "logsigmoid(x)/16 (ViG)"}))
        leaves = [t.clone().requires_grad_() for t in (q, k, v, g, rg)]
        fwd = impls(*leaves)
        cases.append(Case(
            name=f"gla fwd+bwd B{B} T{T} H{H} D{D}", shapes=shapes,
            impls={name: fn if isinstance(fn, str) else with_backward(fn, leaves, do) for name, fn in fwd.items()},
            bytes=2.5 * io, notes={"direction": "forward+backward"}))
    return cases
