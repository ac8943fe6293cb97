"""Block masks as the block-sparse core's KV lists (plain PyTorch, no Triton)."""
from __future__ import annotations

import torch

__all__ = ["PAD", "block_mask_to_index", "index_to_block_mask", "visit_order"]

PAD = 2**31 - 1   # ends a KV list shorter than the table's width: larger than any block id


def block_mask_to_index(block_mask: torch.Tensor) -> torch.Tensor:
    """bool [..., NQB, NKB] -> int32 [..., NQB, L]: each query block's selected key blocks in
    ascending order, padded with ``PAD``; L is the longest row's length (at least 1). Reads the
    longest length back to the host (one synchronisation)."""
    counts = block_mask.sum(-1)
    length = max(int(counts.max()), 1) if counts.numel() else 1
    # a stable descending sort puts the selected columns first, in ascending order
    order = torch.sort(block_mask.to(torch.uint8), dim=-1, descending=True, stable=True).indices[..., :length]
    slot = torch.arange(order.shape[-1], device=block_mask.device)
    index = torch.where(slot < counts[..., None], order, PAD).to(torch.int32)
    if index.shape[-1] < length:   # fewer key blocks than one: an empty mask's row
        index = torch.nn.functional.pad(index, (0, length - index.shape[-1]), value=PAD)
    return index


def index_to_block_mask(index: torch.Tensor, num_key_blocks: int) -> torch.Tensor:
    """The inverse of :func:`block_mask_to_index`: int [..., NQB, L] (``PAD`` ends a list) ->
    bool [..., NQB, num_key_blocks]."""
    index = index.long()
    valid = index != PAD
    mask = torch.zeros((*index.shape[:-1], num_key_blocks + 1), dtype=torch.bool, device=index.device)
    mask.scatter_(-1, torch.where(valid, index, num_key_blocks), True)
    return mask[..., :num_key_blocks]


def visit_order(index: torch.Tensor, num_key_blocks: int) -> torch.Tensor:
    """The order in which the block-sparse kernels take their blocks, most work first: int32
    [..., NQB + num_key_blocks], the query blocks by descending KV-list length (forward and dQ),
    then the key blocks by descending number of lists that hold them (dK/dV); ties keep block
    order. Programs start in grid order, so a long list left to the last wave finishes alone
    (the radial mask's last query block lists every key block, 3-4x the mean). No host
    synchronisation."""
    valid = index != PAD
    lengths = valid.sum(-1)
    slots = torch.where(valid, index.long(), num_key_blocks).flatten(-2)
    counts = torch.zeros((*index.shape[:-2], num_key_blocks + 1), dtype=lengths.dtype, device=index.device)
    counts.scatter_add_(-1, slots, torch.ones_like(slots, dtype=lengths.dtype))
    rows = torch.sort(lengths, dim=-1, descending=True, stable=True).indices
    cols = torch.sort(counts[..., :num_key_blocks], dim=-1, descending=True, stable=True).indices
    return torch.cat([rows, cols], dim=-1).to(torch.int32)
