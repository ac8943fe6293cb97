"""Plain-PyTorch block-sparse attention: the CPU path and the tests' oracle."""
from __future__ import annotations

import torch

__all__ = ["block_sparse_attention_reference", "block_sparse_attention_reference_backward", "token_mask"]

_ROWS = 2048   # query tokens per step: bounds the [B, H, rows, N] score tensor


def token_mask(block_mask: torch.Tensor, block_size: int, n_tokens: int) -> torch.Tensor:
    """[..., NQB, NKB] block mask -> [..., N, N] token mask (the last block cut at ``n_tokens``)."""
    m = block_mask.repeat_interleave(block_size, -2).repeat_interleave(block_size, -1)
    return m[..., :n_tokens, :n_tokens]


def _probabilities(q, k, block_mask, block_size, scale, r0):
    """Softmax rows r0.. (``_ROWS`` of them) of the masked scores [B, H, rows, N] (0 on empty rows) and
    their natural-log LSE [B, H, rows] (-inf on empty rows)."""
    N = k.shape[2]
    cols = torch.arange(N, device=q.device) // block_size
    rows = torch.arange(r0, min(N, r0 + _ROWS), device=q.device) // block_size
    per_head = block_mask if block_mask.dim() == 4 else block_mask[:, None]     # [B|1, H|1, NB, NB]
    allowed = per_head[:, :, rows][:, :, :, cols]                               # [B|1, H|1, rows, N]
    s = (q[:, :, r0:r0 + _ROWS] @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    empty = ~allowed.any(-1, keepdim=True)                                      # rows selecting nothing
    lse = torch.logsumexp(s.masked_fill(empty, 0.0), -1, keepdim=True)          # finite: no NaN gradient
    return torch.exp(s - lse), lse.masked_fill(empty, float("-inf"))[..., 0]


def block_sparse_attention_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                     block_mask: torch.Tensor, block_size: int, scale: float
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each query block to the key blocks its row of ``block_mask`` selects.

    Args:
        query, key, value: [B, N, H, D]. block_mask: bool [B or 1, NB, NB], or [B or 1, H, NB, NB]
            per head; NB = ceil(N / block_size).
    Returns:
        out [B, N, H, D] (0 for a query whose row selects nothing) and the natural-log LSE
        [B, N, H] (-inf there), float32 (float64 for float64 inputs). Differentiable.
    """
    B, N, H, D = query.shape
    lse_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q, k, v = (t.transpose(1, 2).to(lse_dtype) for t in (query, key, value))    # [B, H, N, D]
    outs, lses = [], []
    for r0 in range(0, N, _ROWS):
        p, lse = _probabilities(q, k, block_mask, block_size, scale, r0)
        outs.append(p @ v)
        lses.append(lse)
    out = torch.cat(outs, 2).transpose(1, 2).to(query.dtype)
    return out, torch.cat(lses, 2).transpose(1, 2)


def block_sparse_attention_reference_backward(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                                              value: torch.Tensor, block_mask: torch.Tensor, block_size: int,
                                              scale: float, grad_lse: torch.Tensor | None = None
                                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of :func:`block_sparse_attention_reference` given the gradients of its output
    and (optionally, [B, N, H]) of its LSE, written out: the op's backward on the reference path
    runs below autograd, where recording a graph is not possible. dLSE/ds = P, so the LSE's
    gradient joins dS = P * (dP - delta) as delta - dLSE."""
    work = torch.float64 if query.dtype == torch.float64 else torch.float32
    q, k, v, do = (t.transpose(1, 2).to(work) for t in (query, key, value, grad_out))
    glse = None if grad_lse is None else grad_lse.transpose(1, 2).to(work)[..., None]   # [B, H, N, 1]
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for r0 in range(0, q.shape[2], _ROWS):
        rows = slice(r0, r0 + _ROWS)
        p, _ = _probabilities(q, k, block_mask, block_size, scale, r0)
        o = p @ v
        dv += p.transpose(-1, -2) @ do[:, :, rows]
        dp = do[:, :, rows] @ v.transpose(-1, -2)
        delta = (do[:, :, rows] * o).sum(-1, keepdim=True)
        if glse is not None:
            delta = delta - glse[:, :, rows]
        ds = p * (dp - delta) * scale
        dq[:, :, rows] = ds @ k
        dk += ds.transpose(-1, -2) @ q[:, :, rows]
    return tuple(t.transpose(1, 2).to(query.dtype) for t in (dq, dk, dv))
