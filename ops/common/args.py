"""Argument normalisation and validation shared by every op.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument and
states the rule, so a user sees what to change rather than a Triton crash.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "as_tuple",
    "check_floating",
    "check_item_span",
    "check_rank",
    "check_span",
    "check_same_device",
    "check_same_dtype",
    "check_positive",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tuple(value, rank: int, name: str, kind: type = int) -> tuple:
    """Expand an int/bool or a per-axis sequence to a ``rank``-tuple of ``kind``."""
    if isinstance(value, bool) and kind is int:
        raise TypeError(f"{name} must be an int or a tuple of {rank} ints, got a bool")
    if isinstance(value, kind) or (kind is int and isinstance(value, int)):
        return (kind(value),) * rank
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != rank:
            raise ValueError(
                f"{name} has {len(value)} entries but the input has {rank} spatial "
                f"dimension(s): pass one value or a tuple of {rank}"
            )
        for v in value:
            if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
                raise TypeError(f"{name} entries must be {kind.__name__}, got {type(v).__name__}")
        return tuple(kind(v) for v in value)
    raise TypeError(f"{name} must be a {kind.__name__} or a tuple of {rank}, got {type(value).__name__}")


def check_positive(values: tuple[int, ...], name: str) -> None:
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1 on every axis, got {values}")


def check_floating(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def check_rank(t: torch.Tensor, name: str, allowed: Sequence[int], layout: str) -> None:
    if t.dim() not in allowed:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, allowed))} dimensions laid out as {layout}, "
            f"got shape {tuple(t.shape)}"
        )


def check_same_dtype(**tensors: torch.Tensor | None) -> None:
    named = {k: t for k, t in tensors.items() if t is not None}
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}={t.dtype}" for k, t in named.items())
        raise TypeError(f"all inputs must share one dtype, got {desc}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    named = {k: t for k, t in tensors.items() if t is not None}
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        desc = ", ".join(f"{k} on {t.device}" for k, t in named.items())
        raise ValueError(f"all inputs must be on one device, got {desc}")


def element_span(shape: Sequence[int], strides: Sequence[int]) -> int:
    """Elements between a layout's first and last element (0 for an empty one)."""
    return sum((n - 1) * abs(s) for n, s in zip(shape, strides) if n > 0)


def check_span(name: str, shape: Sequence[int], strides: Sequence[int]) -> None:
    """The Triton kernels index within one batch item with 32-bit offsets (batch offsets are
    64-bit): an item whose elements lie 2**31 or more apart would be read at wrapped addresses."""
    if element_span(shape[1:], strides[1:]) >= 2**31:
        raise ValueError(f"{name} {tuple(shape)} with strides {tuple(strides)} spans 2**31 or more elements "
                         "within one batch item, more than the kernels' 32-bit offsets address: split it "
                         "along a spatial axis")


def check_item_span(**tensors: torch.Tensor | None) -> None:
    """``check_span`` for each tensor given (None skipped)."""
    for name, t in tensors.items():
        if t is not None:
            check_span(name, t.shape, t.stride())
