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

``core_fraction`` counts the walked key boxes that lie inside every window of their query box,
which the forward may walk without the per-element window test.

Pure Python on the problem's sizes, cached per problem: it runs once per shape, not per call.
"""
from __future__ import annotations

import functools
import math

Box = tuple[int, int, int]

__all__ = ["axis_window", "choose_boxes", "core_fraction", "query_range", "walk_products"]


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
    ``_query_range``. A window holds its leader, within ``stride - 1`` of the query, so no
    such query is further than ``kernel + stride`` from the keys."""
    first = max(first_key - (kernel + stride), 0)
    while axis_window(first, length, kernel, stride, causal)[1] < first_key:
        first += 1
    last = min(last_key + (kernel + stride), length - 1)
    while axis_window(last, length, kernel, stride, causal)[0] > last_key:
        last -= 1
    return first, last


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


def _axis_core_blocks(length: int, kernel: int, stride: int, causal: bool, bm: int, bn: int) -> tuple[int, int]:
    """(walked key boxes, those inside every window of their query box) on one axis, summed over
    the query boxes of the forward walk. A query box's window core runs from its last query's low
    bound to its first query's high bound (both bounds are monotone in the query)."""
    walked = core = 0
    for t in range(-(-length // bm)):
        lo_first, hi_first = axis_window(min(t * bm, length - 1), length, kernel, stride, causal)
        lo_last, hi_last = axis_window(min(t * bm + bm - 1, length - 1), length, kernel, stride, causal)
        n = -(-(hi_last - lo_first + 1) // bn)   # the walk covers the union [lo_first, hi_last]
        walked += n
        core += sum(1 for w in range(n) if lo_last <= lo_first + w * bn and lo_first + (w + 1) * bn - 1 <= hi_first)
    return walked, core


def core_fraction(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool], bm: Box, bn: Box) -> float:
    """Share of the forward walk's key blocks that lie inside every window of their query box (no
    per-element window test needed); the axes are independent, so the shares multiply."""
    walked, core = zip(*(_axis_core_blocks(*args) for args in zip(lengths, kernel, stride, causal, bm, bn)))
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


@functools.lru_cache(maxsize=256)
def choose_boxes(lengths: Box, kernel: Box, stride: Box, causal: tuple[bool, bool, bool],
                 rows_m: int, rows_n: int, by_keys: bool = False) -> tuple[Box, Box, int]:
    """The (query box, key box) of ``rows_m`` / ``rows_n`` tokens with the fewest products, and
    that count. ``lengths`` are the (dilation-group) axis lengths, padded to 3 axes; ``by_keys``
    costs the dK/dV walk (key boxes own, query boxes are walked)."""
    caps = tuple(1 << max(0, n - 1).bit_length() for n in lengths)
    best = None
    for bm in _boxes(rows_m, caps):
        for bn in _boxes(rows_n, caps):
            cost = walk_products(lengths, kernel, stride, causal, bm, bn, by_keys)
            rank = (cost, -bn[2], -bm[2])
            if best is None or rank < best[0]:
                best = (rank, bm, bn)
    return best[1], best[2], best[0][0]
