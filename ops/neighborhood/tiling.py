"""Tile shapes for the NA kernels: a cost model over query boxes and key boxes.

The forward and dQ programs own a query box and walk the union of its queries' windows in key
boxes; the dK/dV programs own a key box and walk, in query boxes, the range of queries whose
windows meet it (its inverse neighbourhood). Every walked block costs a full ``M x N`` tile of
products, masked or not. The work of a (query box, key box) pair is therefore ``M * N * blocks``,
where ``blocks`` is, per axis, the number of walked boxes summed over the owned boxes: the axes
are independent, so the total is the product of per-axis sums. The model picks the pair with the
fewest products (exact for any kernel, stride, dilation group length and causal flag); ties go
to boxes that are longer along the last (contiguous) axis. The two walks differ: on NA-2D
large (17x17 on 96x96, 32-query x 64-key tiles) the boxes that are best for the forward walk
make the dK/dV walk 2.99x the needed products, the inverse model's choice 1.99x.

``core_fraction`` counts the walked blocks that need no per-element window test: key boxes inside
every window of their query box (forward, dQ), query boxes whose every window holds their key box
(dK/dV); walks mostly made of such blocks skip the test on them (the kernels' ``CORE``).

Pure Python on the problem's sizes, cached per problem: it runs once per shape, not per call.
"""
from __future__ import annotations

import functools
import math

Box = tuple[int, int, int]

__all__ = ["axis_window", "choose_boxes", "core_fraction", "query_range", "rank_boxes", "walk_products"]


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


def query_range(first_key: int, last_key: int, length: int, kernel: int, stride: int,
                causal: bool) -> tuple[int, int]:
    """Inclusive range of the queries whose windows meet keys [first_key, last_key] on one axis
    (contiguous: window bounds are monotone in the query); the rule of the kernels'
    ``_query_range``, the same binary searches. A window holds its query and lies within
    ``kernel + stride`` of it, which bounds both searches. Swapped (``first_key > last_key``), it
    gives the queries whose windows hold all of [last_key, first_key] (empty: first > last)."""
    a, b = max(first_key - (kernel + stride), 0), first_key
    while a < b:   # the first query whose window ends at or after first_key
        m = (a + b) // 2
        a, b = (m + 1, b) if axis_window(m, length, kernel, stride, causal)[1] < first_key else (a, m)
    first = a
    a, b = last_key, min(last_key + (kernel + stride), length - 1)
    while a < b:   # the last query whose window starts at or before last_key
        m = (a + b + 1) // 2
        a, b = (a, m - 1) if axis_window(m, length, kernel, stride, causal)[0] > last_key else (m, b)
    return first, a


def _axis_blocks(length: int, kernel: int, stride: int, causal: bool, bm: int, bn: int, by_keys: bool) -> int:
    """Boxes walked on one axis, summed over the owned boxes: key boxes of extent ``bn`` per
    query box of extent ``bm`` (forward, dQ), or query boxes per key box (``by_keys``, dK/dV)."""
    total = 0
    if by_keys:
        for t in range(-(-length // bn)):
            first, last = query_range(min(t * bn, length - 1), min(t * bn + bn - 1, length - 1),
                                      length, kernel, stride, causal)
            total += -(-(last - first + 1) // bm)
        return total
    for t in range(-(-length // bm)):
        lo = axis_window(min(t * bm, length - 1), length, kernel, stride, causal)[0]
        hi = axis_window(min(t * bm + bm - 1, length - 1), length, kernel, stride, causal)[1]
        total += -(-(hi - lo + 1) // bn)
    return total


def walk_products(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool], bm: Box, bn: Box,
                  by_keys: bool = False) -> int:
    """Query-key products a (query box, key box) pair computes over the whole grid (per head):
    programs own query boxes (forward, dQ) or key boxes (``by_keys``: dK/dV)."""
    blocks = math.prod(_axis_blocks(*args, by_keys) for args in zip(lengths, kernel, stride, causal, bm, bn))
    return blocks * math.prod(bm) * math.prod(bn)


def _axis_core_blocks(length: int, kernel: int, stride: int, causal: bool, bm: int, bn: int,
                      by_keys: bool) -> tuple[int, int]:
    """(walked boxes, those that need no window test) on one axis, summed over the owned boxes.
    Forward/dQ: key boxes inside every window of their query box, whose window core runs from its
    last query's low bound to its first query's high bound (both bounds are monotone in the
    query). dK/dV (``by_keys``): query boxes whose every window holds the whole key box, the
    queries from the first whose window ends at or after the box's last key to the last whose
    window starts at or before its first key."""
    walked = core = 0
    if by_keys:
        for t in range(-(-length // bn)):
            first_key, last_key = min(t * bn, length - 1), min(t * bn + bn - 1, length - 1)
            first, last = query_range(first_key, last_key, length, kernel, stride, causal)
            c_first, c_last = query_range(last_key, first_key, length, kernel, stride, causal)
            n = -(-(last - first + 1) // bm)
            walked += n
            core += sum(1 for w in range(n) if c_first <= first + w * bm and first + (w + 1) * bm - 1 <= c_last)
        return walked, core
    for t in range(-(-length // bm)):
        lo_first, hi_first = axis_window(min(t * bm, length - 1), length, kernel, stride, causal)
        lo_last, hi_last = axis_window(min(t * bm + bm - 1, length - 1), length, kernel, stride, causal)
        n = -(-(hi_last - lo_first + 1) // bn)   # the walk covers the union [lo_first, hi_last]
        walked += n
        core += sum(1 for w in range(n) if lo_last <= lo_first + w * bn and lo_first + (w + 1) * bn - 1 <= hi_first)
    return walked, core


def core_fraction(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool], bm: Box, bn: Box,
                  by_keys: bool = False) -> float:
    """Share of a walk's blocks that need no per-element window test: key boxes inside every window
    of their query box (forward, dQ), or query boxes whose every window holds their key box
    (``by_keys``: dK/dV). The axes are independent, so the shares multiply."""
    walked, core = zip(*(_axis_core_blocks(*args, by_keys) for args in zip(lengths, kernel, stride, causal, bm, bn)))
    return math.prod(core) / math.prod(walked)


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


def rank_boxes(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool], rows_m: int,
               rows_n: int, by_keys: bool = False) -> list[tuple[int, Box, Box]]:
    """Every (products, query box, key box) of ``rows_m`` / ``rows_n`` tokens, fewest products
    first, ties to boxes longer along the last (contiguous) axis. ``lengths`` are the
    (dilation-group) axis lengths, padded to 3 axes; ``by_keys`` costs the dK/dV walk (key boxes
    own, query boxes are walked)."""
    caps = tuple(1 << max(0, n - 1).bit_length() for n in lengths)
    pairs = [(walk_products(lengths, kernel, stride, causal, bm, bn, by_keys), bm, bn)
             for bm in _boxes(rows_m, caps) for bn in _boxes(rows_n, caps)]
    return sorted(pairs, key=lambda p: (p[0], -p[2][2], -p[1][2]))


@functools.lru_cache(maxsize=256)
def choose_boxes(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool],
                 rows_m: int, rows_n: int, by_keys: bool = False) -> tuple[Box, Box, int]:
    """The (query box, key box) of ``rows_m`` / ``rows_n`` tokens with the fewest products, and
    that count (the first of ``rank_boxes``)."""
    cost, bm, bn = rank_boxes(lengths, kernel, stride, causal, rows_m, rows_n, by_keys)[0]
    return bm, bn, cost
