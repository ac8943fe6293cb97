"""Validation and normalisation of neighborhood-attention arguments (NATTEN's rules)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..common import (as_tuple, check_floating, check_positive, check_rank, check_same_device,
                      check_same_dtype)

LAYOUT = "[batch, *spatial (1-3 axes), heads, head_dim]"
MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class NAParams:
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    is_causal: tuple[bool, ...]
    scale: float


_PASSED: dict = {}   # signature -> NAParams of argument sets that passed every rule


def _signature(tensors, options) -> tuple | None:
    """What every rule depends on: each tensor's shape, dtype and device, and each option with
    its type (``True`` must not pass for ``1``); None when something is not hashable."""
    try:
        sig = tuple(None if t is None else (type(t), t.shape, t.dtype, t.device) for t in tensors)
        opts = tuple((type(o), tuple((type(e), e) for e in o) if isinstance(o, (list, tuple)) else o)
                     for o in options)
        key = (sig, opts)
        hash(key)
        return key
    except (AttributeError, TypeError):
        return None


def check_na_args(query, key, value, kernel_size, dilation, stride, is_causal, scale,
                  additional_keys=None, additional_values=None, rank: int | None = None) -> NAParams:
    """Check shapes, dtypes, devices and window rules; return per-axis tuples and the scale.

    An argument set that passed before is recognised by its signature and not checked again
    (eager calls only: the rules cost more host time than a small map's kernel)."""
    if torch.compiler.is_compiling():
        return _check_na_args(query, key, value, kernel_size, dilation, stride, is_causal, scale,
                              additional_keys, additional_values, rank)
    sig = _signature((query, key, value, additional_keys, additional_values),
                     (kernel_size, dilation, stride, is_causal, scale, rank))
    p = _PASSED.get(sig) if sig is not None else None
    if p is None:
        p = _check_na_args(query, key, value, kernel_size, dilation, stride, is_causal, scale,
                           additional_keys, additional_values, rank)
        if sig is not None and len(_PASSED) < 4096:
            _PASSED[sig] = p
    return p


def _check_na_args(query, key, value, kernel_size, dilation, stride, is_causal, scale,
                   additional_keys, additional_values, rank) -> NAParams:
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_floating(t, name)
        check_rank(t, name, (4, 5, 6), LAYOUT)
    spatial_rank = query.dim() - 3
    if rank is not None and spatial_rank != rank:
        raise ValueError(f"query must have {rank} spatial axes ({rank + 3} dimensions) for na{rank}d, "
                         f"got shape {tuple(query.shape)}")
    check_same_dtype(query=query, key=key, value=value,
                     additional_keys=additional_keys, additional_values=additional_values)
    check_same_device(query=query, key=key, value=value,
                      additional_keys=additional_keys, additional_values=additional_values)
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(f"key and value must match in all but the last (head_dim) dimension, "
                         f"got key {tuple(key.shape)} and value {tuple(value.shape)}")
    if query.shape[:-2] != key.shape[:-2] or query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must share batch, spatial shape and head_dim, "
                         f"got query {tuple(query.shape)} and key {tuple(key.shape)}")
    heads, kv_heads = query.shape[-2], key.shape[-2]
    if heads < 1 or kv_heads < 1:
        raise ValueError(f"query and key/value need at least one head, got {heads} and {kv_heads} "
                         f"(layout {LAYOUT})")
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
    for name, d in (("query/key head_dim", query.shape[-1]), ("value head_dim", value.shape[-1])):
        if d % 8 or not 8 <= d <= MAX_HEAD_DIM:
            raise ValueError(f"{name} must be a multiple of 8 from 8 to {MAX_HEAD_DIM}, got {d}")

    spatial = tuple(query.shape[1:-2])
    kernel = as_tuple(kernel_size, spatial_rank, "kernel_size")
    dil = as_tuple(dilation, spatial_rank, "dilation")
    strd = as_tuple(stride, spatial_rank, "stride")
    causal = as_tuple(is_causal, spatial_rank, "is_causal", kind=bool)
    check_positive(kernel, "kernel_size")
    check_positive(dil, "dilation")
    check_positive(strd, "stride")
    for axis, (length, k, d, s) in enumerate(zip(spatial, kernel, dil, strd)):
        if k > length:
            raise ValueError(f"kernel_size ({k}) must be <= the input length ({length}) on axis {axis}")
        if k * d > length:
            raise ValueError(f"kernel_size * dilation ({k} * {d}) must be <= the input length "
                             f"({length}) on axis {axis}")
        if s > k:
            raise ValueError(f"stride ({s}) must be <= kernel_size ({k}) on axis {axis}")

    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if additional_keys is not None:
        b, hk, d, dv = query.shape[0], kv_heads, query.shape[-1], value.shape[-1]
        if additional_keys.dim() != 4 or additional_keys.shape[0] != b or additional_keys.shape[2:] != (hk, d):
            raise ValueError(f"additional_keys must be [batch, n_extra, kv_heads, head_dim] = [{b}, n, {hk}, {d}], "
                             f"got {tuple(additional_keys.shape)}")
        if additional_values.shape != (*additional_keys.shape[:3], dv):
            raise ValueError(f"additional_values must be [{b}, {additional_keys.shape[1]}, {hk}, {dv}], "
                             f"got {tuple(additional_values.shape)}")

    if scale is None:
        scale = query.shape[-1] ** -0.5
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale < math.inf:
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    return NAParams(kernel, dil, strd, causal, float(scale))
