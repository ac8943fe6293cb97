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
from ..common.block_index import PAD, block_mask_to_index, index_to_block_mask
from .reference import block_sparse_attention_reference, block_sparse_attention_reference_backward, token_mask

__all__ = ["PAD", "block_mask_to_index", "block_sparse_attention", "block_sparse_attention_from_index",
           "block_sparse_attention_reference", "check_block_sparse_inputs", "index_to_block_mask", "token_mask"]

MAX_HEAD_DIM = 128   # the kernels hold a 128-row block of the head in registers; larger heads are untested on a GPU
MIN_BLOCK = 16   # one block fills a tl.dot's rows: blocks are never packed, so lists may differ in length


def _core_views(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """[B, N, H, D] -> the core's [B, 1, N, H * D] map (a view when heads and channels merge)."""
    return tuple(t.flatten(2).unsqueeze(1) for t in tensors)


def _bsa_forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_index: torch.Tensor,
                      block_size: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, N, H, D = q.shape
    if use_kernels(q, k, v) and q.numel():
        from ..common.block_sparse import block_sparse_attention_forward
        q4, k4, v4 = _core_views(q, k, v)
        out, lse = block_sparse_attention_forward(q4, k4, v4, kv_index.expand(B, -1, -1), (1, block_size), H,
                                                  scale, varlen=True)
        return out.view(B, N, H, D), lse.view(B, N, H)
    mask = index_to_block_mask(kv_index, kv_index.shape[-2])
    if not q.numel():
        lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return torch.zeros_like(q), q.new_zeros((B, N, H), dtype=lse_dtype)
    out, lse = block_sparse_attention_reference(q, k, v, mask, block_size, scale)
    return out.contiguous(), lse.contiguous()


_bsa_forward = torch.library.custom_op(op_name("bsa_forward"), _bsa_forward_impl, mutates_args=())


@_bsa_forward.register_fake
def _(q, k, v, kv_index, block_size, scale):
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=lse_dtype)


def _bsa_backward_impl(grad_out: torch.Tensor, grad_lse: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, kv_index: torch.Tensor,
                       block_size: int, scale: float) -> list[torch.Tensor]:
    B, N, H, D = q.shape
    if use_kernels(q, k, v) and q.numel():
        from ..common.block_sparse import block_sparse_attention_backward
        q4, k4, v4, o4, g4 = _core_views(q, k, v, out, grad_out)
        dq, dk, dv = block_sparse_attention_backward(
            g4, q4, k4, v4, o4, lse.unsqueeze(1), kv_index.expand(B, -1, -1), (1, block_size), H, scale,
            varlen=True, grad_lse=None if grad_lse is None else grad_lse.unsqueeze(1))
        return [dq.view(B, N, H, D), dk.view(B, N, H, D), dv.view(B, N, H, D)]
    if not q.numel():
        return [torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)]
    mask = index_to_block_mask(kv_index, kv_index.shape[-2])
    return list(block_sparse_attention_reference_backward(grad_out, q, k, v, mask, block_size, scale, grad_lse))


_bsa_backward = torch.library.custom_op(op_name("bsa_backward"), _bsa_backward_impl, mutates_args=())
_bsa_backward_call = op_or_impl(_bsa_backward, _bsa_backward_impl)


@_bsa_backward.register_fake
def _(grad_out, grad_lse, q, k, v, out, lse, kv_index, block_size, scale):
    return [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)]


def _setup_context(ctx, inputs, output):
    q, k, v, kv_index, block_size, scale = inputs
    ctx.save_for_backward(q, k, v, kv_index, *output)
    ctx.params = (block_size, scale)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, kv_index, out, lse = ctx.saved_tensors
    if grad_out is None and grad_lse is None:
        return None, None, None, None, None, None
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out.contiguous()   # only the LSE was used
    grad_lse = None if grad_lse is None else grad_lse.contiguous()
    dq, dk, dv = _bsa_backward_call(grad_out, grad_lse, q, k, v, out, lse, kv_index, *ctx.params)
    return dq, dk, dv, None, None, None


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


def _check_mask(block_mask: torch.Tensor, batch: int, blocks: int, device: torch.device) -> torch.Tensor:
    if not isinstance(block_mask, torch.Tensor):
        raise TypeError(f"block_mask must be a bool tensor, got {type(block_mask).__name__}")
    if block_mask.dtype != torch.bool:
        raise TypeError(f"block_mask must be a bool tensor, got {block_mask.dtype}")
    if block_mask.dim() == 2:
        block_mask = block_mask[None]
    if block_mask.dim() != 3 or block_mask.shape[1:] != (blocks, blocks) or block_mask.shape[0] not in (1, batch):
        raise ValueError(f"block_mask must be [NB, NB] or [B, NB, NB] with NB = ceil(N / block_size) = {blocks} "
                         f"and B = {batch}, got {tuple(block_mask.shape)}")
    if block_mask.device != device:
        raise ValueError(f"block_mask must be on the inputs' device {device}, got {block_mask.device}")
    return block_mask


def block_sparse_attention_from_index(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                      kv_index: torch.Tensor, block_size: int, scale: float | None = None,
                                      return_lse: bool = False):
    """:func:`block_sparse_attention` with the mask already turned into KV lists
    (:func:`block_mask_to_index`, int32 [B or 1, NB, L]): no host synchronisation, so callers
    that reuse a mask (radial attention, a diffusion step's layers) convert it once."""
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    out, lse = _bsa_call(query, key, value, kv_index, block_size, scale)
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
        block_mask: bool [NB, NB] or [B, NB, NB], NB = ceil(N / block_size).
        block_size: tokens per block, >= 16 (128 is FlashInfer's and the radial paper's).
        scale: softmax scale, default D ** -0.5.
        return_lse: also return the natural-log sum-exp [B, N, H] (float32, differentiable: e.g.
            to merge attention over other keys by LSE).
    Returns:
        out [B, N, H, D] (and the LSE).
    """
    blocks = check_block_sparse_inputs(query, key, value, block_size, scale)
    block_mask = _check_mask(block_mask, query.shape[0], blocks, query.device)
    return block_sparse_attention_from_index(query, key, value, block_mask_to_index(block_mask), block_size,
                                             scale, return_lse)
