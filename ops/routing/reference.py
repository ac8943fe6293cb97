"""Plain-PyTorch bi-level routing attention: the official BiFormer (legacy BRA) algorithm.

Region routing averages q and k over each region, scores region pairs and keeps the top-k
KV regions per query region. Token attention then *gathers* the routed regions' keys and
values into a new [B, R, topk, T, C] tensor, as the official code does; this is the
reference for tests (fp64-capable) and the peer the fused kernel is benchmarked against.
"""
from __future__ import annotations

import torch

__all__ = ["from_regions", "region_routing", "routing_attention_reference", "routing_attention_reference_backward",
           "to_regions"]


def to_regions(x: torch.Tensor, regions: tuple[int, int]) -> torch.Tensor:
    """[B, Y, X, C] -> [B, R, T, C] with R = ny*nx regions (row-major), T tokens per region."""
    B, Y, X, C = x.shape
    ny, nx = regions
    th, tw = Y // ny, X // nx
    return x.reshape(B, ny, th, nx, tw, C).permute(0, 1, 3, 2, 4, 5).reshape(B, ny * nx, th * tw, C)


def from_regions(x: torch.Tensor, regions: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_regions`: [B, R, T, C] -> [B, Y, X, C]."""
    B, _, _, C = x.shape
    ny, nx = regions
    Y, X = size
    th, tw = Y // ny, X // nx
    return x.reshape(B, ny, nx, th, tw, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Y, X, C)


@torch.no_grad()
def region_routing(q: torch.Tensor, k: torch.Tensor, regions: tuple[int, int], topk: int,
                   scale: float) -> torch.Tensor:
    """Top-k KV regions per query region, from region means of (detached) q and k.

    q, k: [B, Y, X, C]. Returns int64 indices [B, R, topk] (R = ny*nx), shared by all heads.
    """
    q_r = to_regions(q, regions).mean(2)
    k_r = to_regions(k, regions).mean(2)
    affinity = (q_r * scale) @ k_r.transpose(-1, -2)  # [B, R, R]
    return torch.topk(affinity, k=topk, dim=-1).indices


def routing_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor,
                                regions: tuple[int, int], num_heads: int, scale: float,
                                return_lse: bool = False):
    """Token attention of each query region to its routed regions, by gathering them.

    q, k, v: [B, Y, X, C] (Y, X divisible by ``regions``); indices: [B, R, topk].
    Returns out [B, Y, X, C] (and the natural-log LSE [B, Y, X, H] when ``return_lse``).
    """
    B, Y, X, C = q.shape
    R = regions[0] * regions[1]
    D = C // num_heads
    q_r, k_r, v_r = (to_regions(t, regions) for t in (q, k, v))  # [B, R, T, C]
    T = q_r.shape[2]
    topk = indices.shape[-1]
    sel = indices.reshape(B, R, topk, 1, 1).expand(B, R, topk, T, C)
    k_sel = torch.gather(k_r.unsqueeze(1).expand(B, R, R, T, C), 2, sel)  # the copy the kernel avoids
    v_sel = torch.gather(v_r.unsqueeze(1).expand(B, R, R, T, C), 2, sel)
    q_h = q_r.reshape(B, R, T, num_heads, D).transpose(2, 3)  # [B, R, H, T, D]
    k_h = k_sel.reshape(B, R, topk * T, num_heads, D).transpose(2, 3)
    v_h = v_sel.reshape(B, R, topk * T, num_heads, D).transpose(2, 3)
    logits = (q_h * scale) @ k_h.transpose(-1, -2)
    out = torch.softmax(logits, dim=-1) @ v_h  # [B, R, H, T, D]
    out = from_regions(out.transpose(2, 3).reshape(B, R, T, C), regions, (Y, X))
    if not return_lse:
        return out
    lse = torch.logsumexp(logits.float() if logits.dtype != torch.float64 else logits, dim=-1)
    lse = from_regions(lse.transpose(2, 3), regions, (Y, X))  # [B, Y, X, H]
    return out, lse


def routing_attention_reference_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                         indices: torch.Tensor, regions: tuple[int, int], num_heads: int,
                                         scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Explicit gradients (dq, dk, dv) of :func:`routing_attention_reference`: the gathered
    key/value gradients are scattered back to their regions with ``index_add``."""
    B, Y, X, C = q.shape
    R = regions[0] * regions[1]
    D = C // num_heads
    q_r, k_r, v_r, g_r = (to_regions(t, regions) for t in (q, k, v, grad_out))
    T, topk = q_r.shape[2], indices.shape[-1]
    sel = indices.reshape(B, R, topk, 1, 1).expand(B, R, topk, T, C)
    k_sel = torch.gather(k_r.unsqueeze(1).expand(B, R, R, T, C), 2, sel)
    v_sel = torch.gather(v_r.unsqueeze(1).expand(B, R, R, T, C), 2, sel)
    heads = lambda t, n: t.reshape(B, R, n, num_heads, D).transpose(2, 3)  # noqa: E731
    q_h, g_h, k_h, v_h = heads(q_r, T), heads(g_r, T), heads(k_sel, topk * T), heads(v_sel, topk * T)
    p = torch.softmax((q_h * scale) @ k_h.transpose(-1, -2), dim=-1)  # [B, R, H, T, topk*T]
    dv_h = p.transpose(-1, -2) @ g_h
    dp = g_h @ v_h.transpose(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq_h = (ds @ k_h) * scale
    dk_h = (ds.transpose(-1, -2) @ q_h) * scale
    unheads = lambda t, n: t.transpose(2, 3).reshape(B, R, n, C)  # noqa: E731
    dk_sel = unheads(dk_h, topk * T).reshape(B, R * topk, T, C)
    dv_sel = unheads(dv_h, topk * T).reshape(B, R * topk, T, C)
    flat = indices.reshape(B, R * topk)
    dk_r, dv_r = torch.zeros_like(k_r), torch.zeros_like(v_r)
    for b in range(B):  # scatter the gathered copies' gradients back to their source regions
        dk_r[b].index_add_(0, flat[b], dk_sel[b])
        dv_r[b].index_add_(0, flat[b], dv_sel[b])
    dq = from_regions(unheads(dq_h, T), regions, (Y, X))
    return dq, from_regions(dk_r, regions, (Y, X)), from_regions(dv_r, regions, (Y, X))
