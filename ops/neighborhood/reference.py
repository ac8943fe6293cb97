"""Plain-PyTorch neighborhood attention: the oracle for tests and the CPU path.

Builds, per spatial axis, a [L, L] boolean "query i may see key j" table with NATTEN's rules
(clamped windows, dilation groups, stride leaders, causal), combines the axes into a token
mask and runs masked softmax attention. Memory grows with tokens^2 per query chunk, so this
is for correctness and small inputs, not for speed.
"""
from __future__ import annotations

import math

import torch

__all__ = ["axis_mask", "neighborhood_mask", "neighborhood_attention_reference"]


def axis_mask(length: int, kernel: int, dilation: int, stride: int, causal: bool,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """[length, length] bool: may query ``i`` attend key ``j`` along one axis.

    Dilation splits the axis into ``dilation`` interleaved groups; neighborhood attention runs
    inside each group on group-local indices. Queries form runs of ``stride`` that share the
    window of their leader (centre, or right-centre for even strides; the last query on causal
    axes), clamped to the group.
    """
    i = torch.arange(length, device=device)
    group, local = i % dilation, i // dilation
    group_len = (length - group + dilation - 1) // dilation   # length of each index's group
    first = (local // stride) * stride
    if causal:
        leader = torch.minimum(first + stride - 1, group_len - 1)
        lo, hi = (leader - kernel + 1).clamp(min=0), local          # keys in [lo, query]
    else:
        leader = torch.minimum(first + stride // 2, group_len - 1)
        lo = torch.minimum((leader - kernel // 2).clamp(min=0), group_len - kernel)
        hi = lo + kernel - 1
    same_group = group[:, None] == group[None, :]
    jl = local[None, :]
    return same_group & (jl >= lo[:, None]) & (jl <= hi[:, None])


def neighborhood_mask(shape: tuple[int, ...], kernel_size, dilation, stride, is_causal,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """[N, N] bool token mask for a row-major flattened grid of ``shape`` (N = prod(shape))."""
    mask = None
    for axis, length in enumerate(shape):
        m = axis_mask(length, kernel_size[axis], dilation[axis], stride[axis], is_causal[axis], device)
        mask = m if mask is None else (mask[:, None, :, None] & m[None, :, None, :]).reshape(
            mask.shape[0] * length, mask.shape[1] * length)
    return mask


def neighborhood_attention_reference(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    kernel_size: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...],
    is_causal: tuple[bool, ...], scale: float,
    additional_keys: torch.Tensor | None = None, additional_values: torch.Tensor | None = None,
    query_chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference NA on validated, normalised arguments.

    Args:
        query: [B, *spatial, H, D]; key: [B, *spatial, Hkv, D]; value: [B, *spatial, Hkv, Dv],
            with H a multiple of Hkv (grouped-query attention).
        additional_keys / additional_values: [B, N_extra, Hkv, D] / [B, N_extra, Hkv, Dv],
            attended by every query in the same softmax.
    Returns:
        (output [B, *spatial, H, Dv] in the input dtype, lse [B, *spatial, H] in float32;
        float64 throughout for float64 inputs).
    """
    batch, *spatial, heads, _ = query.shape
    kv_heads, dv = key.shape[-2], value.shape[-1]
    n = math.prod(spatial)
    compute = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.reshape(batch, n, heads, -1).transpose(1, 2).to(compute)      # B H N D
    k = key.reshape(batch, n, kv_heads, -1).transpose(1, 2).to(compute)
    v = value.reshape(batch, n, kv_heads, dv).transpose(1, 2).to(compute)
    mask = neighborhood_mask(tuple(spatial), kernel_size, dilation, stride, is_causal, query.device)
    if additional_keys is not None:
        k = torch.cat([k, additional_keys.transpose(1, 2).to(compute)], dim=2)
        v = torch.cat([v, additional_values.transpose(1, 2).to(compute)], dim=2)
        mask = torch.cat([mask, mask.new_ones(n, additional_keys.shape[1])], dim=1)
    if kv_heads != heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    outs, lses = [], []
    for start in range(0, n, query_chunk):
        scores = (q[:, :, start:start + query_chunk] @ k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~mask[start:start + query_chunk], float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        outs.append(torch.exp(scores - lse[..., None]) @ v)
        lses.append(lse)
    out = torch.cat(outs, dim=2).transpose(1, 2).reshape(batch, *spatial, heads, dv)
    lse = torch.cat(lses, dim=2).transpose(1, 2).reshape(batch, *spatial, heads)
    return out.to(query.dtype), lse.to(compute)



def neighborhood_attention_reference_backward(
    grad_out: torch.Tensor, grad_lse: torch.Tensor | None,
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    kernel_size: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...],
    is_causal: tuple[bool, ...], scale: float,
    additional_keys: torch.Tensor | None = None, additional_values: torch.Tensor | None = None,
    query_chunk: int = 4096,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of (output, lse) w.r.t. (query, key, value, additional_keys, additional_values).

    Explicit flash-attention backward algebra in plain PyTorch (it runs inside a registered op,
    where autograd is off): P = softmax(S), dV = P^T dO, dS = P * (dO V^T - rowsum(dO*O) + dLSE),
    dQ = scale dS K, dK = scale dS^T Q. The extra-KV gradients are None when none were given.
    """
    batch, *spatial, heads, _ = query.shape
    kv_heads, dv_dim = key.shape[-2], value.shape[-1]
    n, group = math.prod(spatial), heads // kv_heads
    compute = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.reshape(batch, n, heads, -1).transpose(1, 2).to(compute)
    k = key.reshape(batch, n, kv_heads, -1).transpose(1, 2).to(compute)
    v = value.reshape(batch, n, kv_heads, dv_dim).transpose(1, 2).to(compute)
    do = grad_out.reshape(batch, n, heads, dv_dim).transpose(1, 2).to(compute)
    dlse = None if grad_lse is None else grad_lse.reshape(batch, n, heads).transpose(1, 2).to(compute)
    mask = neighborhood_mask(tuple(spatial), kernel_size, dilation, stride, is_causal, query.device)
    if additional_keys is not None:
        k = torch.cat([k, additional_keys.transpose(1, 2).to(compute)], dim=2)
        v = torch.cat([v, additional_values.transpose(1, 2).to(compute)], dim=2)
        mask = torch.cat([mask, mask.new_ones(n, additional_keys.shape[1])], dim=1)
    k_rep, v_rep = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    dq = torch.empty_like(q)
    dk_rep, dv_rep = torch.zeros_like(k_rep), torch.zeros_like(v_rep)
    for start in range(0, n, query_chunk):
        rows = slice(start, start + query_chunk)
        scores = (q[:, :, rows] @ k_rep.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~mask[rows], float("-inf"))
        p = torch.softmax(scores, dim=-1)
        o = p @ v_rep
        dp = do[:, :, rows] @ v_rep.transpose(-1, -2)
        delta = (do[:, :, rows] * o).sum(-1, keepdim=True)
        ds = p * (dp - delta + (0.0 if dlse is None else dlse[:, :, rows, None]))
        dq[:, :, rows] = (ds @ k_rep) * scale
        dk_rep += (ds.transpose(-1, -2) @ q[:, :, rows]) * scale
        dv_rep += p.transpose(-1, -2) @ do[:, :, rows]
    dk = dk_rep.unflatten(1, (kv_heads, group)).sum(2)
    dv = dv_rep.unflatten(1, (kv_heads, group)).sum(2)
    dq = dq.transpose(1, 2).reshape(query.shape).to(query.dtype)
    grads_extra: tuple[torch.Tensor | None, ...] = (None, None)
    if additional_keys is not None:
        grads_extra = (dk[:, :, n:].transpose(1, 2).to(query.dtype).contiguous(),
                       dv[:, :, n:].transpose(1, 2).to(query.dtype).contiguous())
        dk, dv = dk[:, :, :n], dv[:, :, :n]
    dk = dk.transpose(1, 2).reshape(key.shape).to(query.dtype)
    dv = dv.transpose(1, 2).reshape(value.shape).to(query.dtype)
    return (dq, dk, dv, *grads_extra)
