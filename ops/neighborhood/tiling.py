"""Tile shapes for the NA kernels: a cost model over query boxes and key boxes.

A program owns a query box and walks the union of its queries' windows in key boxes; every
walked block costs a full ``M x N`` tile of products, masked or not. The work of a (query box,
key box) pair is therefore ``M * N * blocks``, where ``blocks`` is, per axis, the number of key
boxes needed to cover each query box's window union, summed over the query boxes: the axes are
independent, so the total is the product of per-axis sums. The model picks the pair with the
fewest products (exact for any kernel, stride, dilation group length and causal flag); ties go
to boxes that are longer along the last (contiguous) axis.

Pure Python on the problem's sizes, cached per problem: it runs once per shape, not per call.
"""
from __future__ import annotations

import functools
import math

Box = tuple[int, int, int]

__all__ = ["axis_window", "choose_boxes", "walk_products"]


def axis_window(i: int, length: int, kernel: int, stride: int, causal: bool) -> tuple[int, int]:
    """Inclusive key range of query ``i`` on one axis (NATTEN's rules, group-local indices);
    the same rule as the kernels' ``_axis_bounds``."""
    first = (i // stride) * stride
    if causal:
        leader = min(first + stride - 1, length - 1)
        return max(leader - kernel + 1, 0), i
    leader = min(first + stride // 2, length - 1)
    lo = min(max(leader - kernel // 2, 0), length - kernel)
    return lo, lo + kernel - 1


def _axis_blocks(length: int, kernel: int, stride: int, causal: bool, bm: int, bn: int) -> int:
    """Key boxes of extent ``bn`` walked on one axis, summed over query boxes of extent ``bm``."""
    total = 0
    for t in range(-(-length // bm)):
        lo = axis_window(min(t * bm, length - 1), length, kernel, stride, causal)[0]
        hi = axis_window(min(t * bm + bm - 1, length - 1), length, kernel, stride, causal)[1]
        total += -(-(hi - lo + 1) // bn)
    return total


def walk_products(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool], bm: Box, bn: Box) -> int:
    """Query-key products a (query box, key box) pair computes over the whole grid (per head)."""
    blocks = math.prod(_axis_blocks(*args) for args in zip(lengths, kernel, stride, causal, bm, bn))
    return blocks * math.prod(bm) * math.prod(bn)


def _boxes(rows: int, caps: Box) -> list[Box]:
    """Power-of-two boxes of exactly ``rows`` tokens within the per-axis caps (the last axis may
    exceed its cap when the grid is too small to hold ``rows`` tokens)."""
    out = []
    for a in range(rows.bit_length()):
        for b in range(rows.bit_length()):
            f0, f1 = 2 ** a, 2 ** b
            if rows % (f0 * f1) or f0 > caps[0] or f1 > caps[1]:
                continue
            f2 = rows // (f0 * f1)
            if f2 <= caps[2] or (f0 == caps[0] and f1 == caps[1]):
                out.append((f0, f1, f2))
    return out


@functools.lru_cache(maxsize=256)
def choose_boxes(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool],
                 rows_m: int, rows_n: int) -> tuple[Box, Box, int]:
    """The (query box, key box) of ``rows_m`` / ``rows_n`` tokens with the fewest products, and
    that count. ``lengths`` are the (dilation-group) axis lengths, padded to 3 axes."""
    caps = tuple(1 << max(0, n - 1).bit_length() for n in lengths)
    best = None
    for bm in _boxes(rows_m, caps):
        for bn in _boxes(rows_n, caps):
            cost = walk_products(lengths, kernel, stride, causal, bm, bn)
            rank = (cost, -bn[2], -bm[2])
            if best is None or rank < best[0]:
                best = (rank, bm, bn)
    return best[1], best[2], best[0][0]
