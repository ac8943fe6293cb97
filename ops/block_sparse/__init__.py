"""Block-sparse attention on token sequences: each query block attends to the key blocks its row
of a boolean block mask selects (FlexAttention's ``BlockMask`` / FlashInfer's BSR semantics).

``block_sparse_attention(query, key, value, block_mask, block_size=128)`` on heads-last
``[B, N, H, D]``. CUDA tensors (or CPU under ``TRITON_INTERPRET=1``) run the index-driven Triton
core of ``ops/common/block_sparse.py`` (forward, and a backward without atomics) with the mask
turned into per-block KV lists of different lengths; float64 and other devices run
``reference.py``. Radial attention (``ops.radial``) is this op with the paper's mask.
"""
from __future__ import annotations

import torch

from ..common import (check_floating, check_rank, check_same_device, check_same_dtype, eager_autograd, op_name,
                      op_or_impl, use_kernels)
from ..common.block_index import PAD, block_mask_to_index, index_to_block_mask, visit_order
from .reference import block_sparse_attention_reference, block_sparse_attention_reference_backward, token_mask

__all__ = ["PAD", "attend_lists", "block_mask_to_index", "block_sparse_attention", "block_sparse_attention_from_index",
           "block_sparse_attention_reference", "check_block_sparse_inputs", "index_to_block_mask", "per_head_index",
           "token_mask", "visit_order"]

MAX_HEAD_DIM = 128   # the kernels hold a 128-row block of the head in registers; larger heads are untested on a GPU
MIN_BLOCK = 16   # one block fills a tl.dot's rows: blocks are never packed, so lists may differ in length


def _core_map(t: torch.Tensor, per_head: bool) -> torch.Tensor:
    """[B, N, H, D] -> the core's [B, Y, X, C] map: [B, 1, N, H * D] when the heads share the KV
    lists (a view when heads and channels merge), [B, H, N, D] with a row of tiles per head when
    each head has its own (a view)."""
    return t.permute(0, 2, 1, 3) if per_head else t.flatten(2).unsqueeze(1)


def _core_lse(lse: torch.Tensor, per_head: bool) -> torch.Tensor:
    """[B, N, H] LSE -> the core's [B, Y, X, heads] layout (a view)."""
    return lse.permute(0, 2, 1).unsqueeze(-1) if per_head else lse.unsqueeze(1)


def _index_mask(kv_index: torch.Tensor, blocks: int, heads: int, per_head: bool) -> torch.Tensor:
    """The block mask a KV-list table stands for: [B|1, NB, NB], or [B|1, H, NB, NB] per head
    (whose lists hold h * NB + key block)."""
    if not per_head:
        return index_to_block_mask(kv_index, blocks)
    mask = index_to_block_mask(kv_index, heads * blocks).unflatten(-1, (heads, blocks)).unflatten(-3, (heads, blocks))
    return torch.diagonal(mask, dim1=1, dim2=3).permute(0, 3, 1, 2)


def _bsa_forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_index: torch.Tensor, order: torch.Tensor,
                      block_size: int, scale: float, per_head: bool) -> tuple[torch.Tensor, torch.Tensor]:
    B, N, H, D = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    if use_kernels(q, k, v) and q.numel():
        from ..common.block_sparse import block_sparse_attention_forward
        out, lse = torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty((B, N, H), dtype=lse_dtype)
        block_sparse_attention_forward(*(_core_map(t, per_head) for t in (q, k, v)), kv_index.expand(B, -1, -1),
                                       (1, block_size), 1 if per_head else H, scale,
                                       out=_core_map(out, per_head), lse=_core_lse(lse, per_head), varlen=True,
                                       order=order.expand(B, -1))
        return out, lse
    if not q.numel():
        return torch.zeros_like(q), q.new_zeros((B, N, H), dtype=lse_dtype)
    mask = _index_mask(kv_index, -(-N // block_size), H, per_head)
    out, lse = block_sparse_attention_reference(q, k, v, mask, block_size, scale)
    return out.contiguous(), lse.contiguous()


_bsa_forward = torch.library.custom_op(op_name("bsa_forward"), _bsa_forward_impl, mutates_args=())


@_bsa_forward.register_fake
def _(q, k, v, kv_index, order, block_size, scale, per_head):
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(q.shape[:3], dtype=lse_dtype)


def _bsa_backward_impl(grad_out: torch.Tensor, grad_lse: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, kv_index: torch.Tensor,
                       order: torch.Tensor, block_size: int, scale: float, per_head: bool) -> list[torch.Tensor]:
    B, N, H, D = q.shape
    if use_kernels(q, k, v) and q.numel():
        from ..common.block_sparse import block_sparse_attention_backward
        grads = [torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v)]
        maps = [_core_map(t, per_head) for t in (grad_out, q, k, v, out, *grads)]
        block_sparse_attention_backward(
            *maps[:5], _core_lse(lse, per_head), kv_index.expand(B, -1, -1), (1, block_size), 1 if per_head else H,
            scale, *maps[5:], varlen=True, grad_lse=None if grad_lse is None else _core_lse(grad_lse, per_head),
            order=order.expand(B, -1))
        return grads
    if not q.numel():
        return [torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)]
    mask = _index_mask(kv_index, -(-N // block_size), H, per_head)
    return list(block_sparse_attention_reference_backward(grad_out, q, k, v, mask, block_size, scale, grad_lse))


_bsa_backward = torch.library.custom_op(op_name("bsa_backward"), _bsa_backward_impl, mutates_args=())
_bsa_backward_call = op_or_impl(_bsa_backward, _bsa_backward_impl)


@_bsa_backward.register_fake
def _(grad_out, grad_lse, q, k, v, out, lse, kv_index, order, block_size, scale, per_head):
    return [torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v)]


def _setup_context(ctx, inputs, output):
    q, k, v, kv_index, order, block_size, scale, per_head = inputs
    ctx.save_for_backward(q, k, v, kv_index, order, *output)
    ctx.params = (block_size, scale, per_head)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, kv_index, order, out, lse = ctx.saved_tensors
    if grad_out is None and grad_lse is None:
        return None, None, None, None, None, None, None, None
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()   # only the LSE was used
    grad_lse = None if grad_lse is None else grad_lse.contiguous()
    dq, dk, dv = _bsa_backward_call(grad_out, grad_lse, q, k, v, out, lse, kv_index, order, *ctx.params)
    return dq, dk, dv, None, None, None, None, None


_bsa_forward.register_autograd(_backward, setup_context=_setup_context)
_bsa_call = eager_autograd(_bsa_forward, _bsa_forward_impl, _setup_context, _backward)


def check_block_sparse_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, block_size: int,
                              scale: float | None) -> int:
    """The argument rules of :func:`block_sparse_attention` (mask aside); returns the number of
    blocks along the sequence."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_floating(t, name)
        check_rank(t, name, (4,), "[B, N, H, D]")
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(f"query, key and value must have one shape [B, N, H, D] (no GQA, value head dim = "
                         f"query's), got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    check_same_dtype(query=query, key=key, value=value)
    check_same_device(query=query, key=key, value=value)
    if not 1 <= query.shape[-1] <= MAX_HEAD_DIM:
        raise ValueError(f"head dim must be in [1, {MAX_HEAD_DIM}], got {query.shape[-1]}")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if block_size < MIN_BLOCK:
        raise ValueError(f"block_size must be >= {MIN_BLOCK}, got {block_size}")
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
        raise ValueError(f"scale must be a positive number or None, got {scale!r}")
    return -(-query.shape[1] // block_size)


def _check_mask(block_mask: torch.Tensor, batch: int, heads: int, blocks: int, device: torch.device) -> torch.Tensor:
    """The mask as [B|1, NB, NB] (shared by the heads) or [B|1, H, NB, NB] (per head)."""
    if not isinstance(block_mask, torch.Tensor):
        raise TypeError(f"block_mask must be a bool tensor, got {type(block_mask).__name__}")
    if block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be a bool tensor, got {block_mask.dtype}")
    if block_mask.dim() == 2:
        block_mask = block_mask[None]
    if block_mask.dim() == 4 and block_mask.shape[1] == 1:
        block_mask = block_mask[:, 0]
    ok = (block_mask.dim() in (3, 4) and block_mask.shape[-2:] == (blocks, blocks) and block_mask.shape[0] in (1, batch)
          and (block_mask.dim() == 3 or block_mask.shape[1] == heads))
    if not ok:
        raise ValueError(f"block_mask must be [NB, NB], [B, NB, NB] or [B, H, NB, NB] (B and H may be 1) with "
                         f"NB = ceil(N / block_size) = {blocks}, B = {batch} and H = {heads}, "
                         f"got {tuple(block_mask.shape)}")
    if block_mask.device != device:
        raise ValueError(f"block_mask must be on the inputs' device {device}, got {block_mask.device}")
    return block_mask


def per_head_index(block_mask: torch.Tensor) -> torch.Tensor:
    """KV lists of per-head masks [B|1, H, NB, NB] for the core's grid of one tile row per head:
    int32 [B|1, H * NB, L], head h's key block j listed as h * NB + j."""
    H, blocks = block_mask.shape[1], block_mask.shape[-1]
    index = block_mask_to_index(block_mask)
    offset = (torch.arange(H, device=index.device, dtype=torch.int32) * blocks)[:, None, None]
    return torch.where(index == PAD, index, index + offset).flatten(1, 2)


def block_sparse_attention_from_index(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                      kv_index: torch.Tensor, block_size: int, scale: float | None = None,
                                      return_lse: bool = False):
    """:func:`block_sparse_attention` with the mask already turned into KV lists: int32
    [B or 1, NB, L] from :func:`block_mask_to_index` (heads share them), or [B or 1, H * NB, L]
    from :func:`per_head_index`. No host synchronisation, so callers that reuse a mask (radial
    attention, a diffusion step's layers) convert it once."""
    return attend_lists(query, key, value, kv_index, visit_order(kv_index, kv_index.shape[-2]), block_size, scale,
                        return_lse)


def attend_lists(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_index: torch.Tensor,
                 order: torch.Tensor, block_size: int, scale: float | None = None, return_lse: bool = False):
    """:func:`block_sparse_attention_from_index` given the lists' :func:`visit_order` as well
    (int32 [B or 1, 2 * rows]), for callers that keep it with the lists (``ops.radial``). The
    order must be the lists' own: it decides which program computes which block."""
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    per_head = kv_index.shape[-2] != -(-query.shape[1] // block_size)   # H * NB rows: lists per head
    out, lse = _bsa_call(query, key, value, kv_index, order, block_size, scale, per_head)
    return (out, lse) if return_lse else out


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: int = 128,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention over a token sequence.

    The sequence is cut into blocks of ``block_size`` tokens (the last may be shorter). Query
    block i attends to the tokens of every key block j with ``block_mask[..., i, j]`` true, in
    one softmax; a query block that selects nothing outputs 0 (LSE -inf).

    Args:
        query, key, value: [B, N, H, D], one shape, any strides.
        block_mask: bool [NB, NB] or [B, NB, NB] (the heads share it) or [B, H, NB, NB] (a mask
            per head, e.g. spatial and temporal heads; B may be 1), NB = ceil(N / block_size).
        block_size: tokens per block, >= 16 (128 is FlashInfer's and the radial paper's).
        scale: softmax scale, default D ** -0.5.
        return_lse: also return the natural-log sum-exp [B, N, H] (float32, differentiable: e.g.
            to merge attention over other keys by LSE).
    Returns:
        out [B, N, H, D] (and the LSE).
    """
    blocks = check_block_sparse_inputs(query, key, value, block_size, scale)
    block_mask = _check_mask(block_mask, query.shape[0], query.shape[2], blocks, query.device)
    index = per_head_index(block_mask) if block_mask.dim() == 4 else block_mask_to_index(block_mask)
    return block_sparse_attention_from_index(query, key, value, index, block_size, scale, return_lse)
