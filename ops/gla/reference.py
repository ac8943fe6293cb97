"""Plain-PyTorch gated linear attention (GLA): the CPU path and the tests' oracle.

Causal GLA with a per-key-channel log forget gate ``g`` (<= 0):
``S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T`` and ``o_t = (scale q_t)^T S_t``; "reverse" runs the
same recurrence from the last token down, and "bidirectional" sums both (each with its own gate).
"""
from __future__ import annotations

import torch

__all__ = ["DIRECTIONS", "gated_linear_attention_reference", "gla_recurrent_reference"]

DIRECTIONS = ("causal", "reverse", "bidirectional")

_CHUNK = 16   # chunk of the reference: the pairwise gate tensor is [.., 16, 16, K] per chunk


def gla_recurrent_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float,
                            reverse: bool = False) -> torch.Tensor:
    """Token-by-token recurrence, the definition itself (slow; for tests). [B, T, H, K|V] -> [B, T, H, V]."""
    B, T, H, K = q.shape
    state = q.new_zeros(B, H, K, v.shape[-1])
    out = torch.empty(B, T, H, v.shape[-1], dtype=q.dtype, device=q.device)
    for t in (reversed(range(T)) if reverse else range(T)):
        state = g[:, t].exp()[..., None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        out[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state)
    return out


def _causal_chunked(q, k, v, g, scale):
    """Causal GLA in chunks of 16: exact pairwise decays inside a chunk (every exponent <= 0, so no
    overflow whatever the gates), a state carried across chunks. Differentiable; float math."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = _CHUNK
    pad = -T % C
    if pad:   # zero gates and keys after the end: they change nothing before it
        q, k, v, g = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v, g))
    n = q.shape[1] // C
    # [B, H, n, C, K|V]
    q, k, v, g = (t.reshape(B, n, C, H, t.shape[-1]).permute(0, 3, 1, 2, 4) for t in (q, k, v, g))
    q = q * scale
    G = g.cumsum(3)                                   # chunk-local inclusive prefix of the log decay
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()[..., None]
    diff = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal, float("-inf"))
    A = (q[..., :, None, :] * k[..., None, :, :] * diff.exp()).sum(-1)     # [B, H, n, C(t), C(s)]
    out = A @ v
    total = G[..., -1:, :]                              # [B, H, n, 1, K]
    U = (k * (total - G).exp()).transpose(-1, -2) @ v   # each chunk's own state contribution [B, H, n, K, V]
    state = q.new_zeros(B, H, K, V)
    states = []
    for c in range(n):
        states.append(state)
        state = total[:, :, c, 0, :, None].exp() * state + U[:, :, c]
    entry = torch.stack(states, 2) if states else U   # U is empty when there is no chunk
    out = out + (q * G.exp()) @ entry
    return out.permute(0, 2, 3, 1, 4).reshape(B, n * C, H, V)[:, :T]


def gated_linear_attention_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                     gate: torch.Tensor, scale: float | None = None, direction: str = "causal",
                                     reverse_gate: torch.Tensor | None = None) -> torch.Tensor:
    """Same arguments and result as :func:`ops.gated_linear_attention`, in plain PyTorch (fp32 math
    for half inputs, fp64 for fp64). [B, T, H, K], [B, T, H, V] -> [B, T, H, V]."""
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    dtype = query.dtype
    math = torch.float64 if dtype == torch.float64 else torch.float32
    q, k, v = (t.to(math) for t in (query, key, value))
    out = None
    if direction in ("causal", "bidirectional"):
        out = _causal_chunked(q, k, v, gate.to(math), scale)
    if direction in ("reverse", "bidirectional"):
        rg = gate if reverse_gate is None else reverse_gate
        flip = lambda t: t.flip(1)  # noqa: E731
        rev = flip(_causal_chunked(flip(q), flip(k), flip(v), flip(rg.to(math)), scale))
        out = rev if out is None else out + rev
    return out.to(dtype)
