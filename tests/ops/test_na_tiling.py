"""The NA tile cost model: its window rule is the reference's, its product count is the walk."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import triton
import triton.language as tl

from ops.neighborhood.kernels import _query_range
from ops.neighborhood.reference import axis_mask
from ops.neighborhood.tiling import axis_window, choose_boxes, query_range, walk_products


@pytest.mark.parametrize("length,kernel,stride,causal", [(13, 5, 1, False), (12, 4, 3, False), (9, 9, 2, False),
                                                         (11, 3, 2, True), (16, 6, 4, True)])
def test_axis_window_matches_the_reference_mask(length, kernel, stride, causal):
    mask = axis_mask(length, kernel, 1, stride, causal)
    for i in range(length):
        lo, hi = axis_window(i, length, kernel, stride, causal)
        expected = torch.zeros(length, dtype=torch.bool)
        expected[lo:hi + 1] = True
        assert torch.equal(mask[i], expected), (i, lo, hi)


def _walk_bruteforce(lengths, kernel, stride, causal, bm, bn):
    """Products of the kernels' walk, box by box, and a check that every window is inside it."""
    total = 0
    tiles = [range(-(-n // m)) for n, m in zip(lengths, bm)]
    for t in itertools.product(*tiles):
        blocks = 1
        for a in range(3):
            rows = [min(t[a] * bm[a] + r, lengths[a] - 1) for r in range(bm[a])]
            wins = [axis_window(i, lengths[a], kernel[a], stride[a], causal[a]) for i in rows]
            lo, hi = wins[0][0], wins[-1][1]
            assert all(lo <= w0 and w1 <= hi for w0, w1 in wins)   # the union bounds hold every window
            blocks *= -(-(hi - lo + 1) // bn[a])
        total += blocks * math.prod(bm) * math.prod(bn)
    return total


def _inverse_walk_bruteforce(lengths, kernel, stride, causal, bm, bn):
    """Products of the dK/dV walk, key box by key box, from each axis' exact set of queries whose
    windows meet the box (checked to be the contiguous range the kernels walk)."""
    total = 0
    tiles = [range(-(-n // m)) for n, m in zip(lengths, bn)]
    for t in itertools.product(*tiles):
        blocks = 1
        for a in range(3):
            keys = range(t[a] * bn[a], min(t[a] * bn[a] + bn[a], lengths[a]))
            hits = [i for i in range(lengths[a])
                    if any(lo <= j <= hi for lo, hi in [axis_window(i, lengths[a], kernel[a], stride[a], causal[a])]
                           for j in keys)]
            assert hits == list(range(hits[0], hits[-1] + 1))
            assert query_range(keys[0], keys[-1], lengths[a], kernel[a], stride[a], causal[a]) == (hits[0], hits[-1])
            blocks *= -(-len(hits) // bm[a])
        total += blocks * math.prod(bm) * math.prod(bn)
    return total


WALK_CASES = [((1, 13, 10), (1, 5, 3), (1, 1, 2), (False, False, True)),
              ((3, 7, 9), (2, 3, 5), (1, 2, 1), (True, False, False)),
              ((1, 16, 12), (1, 8, 4), (1, 4, 4), (False, True, False))]


@pytest.mark.parametrize("lengths,kernel,stride,causal", WALK_CASES)
def test_walk_products_is_the_walk(lengths, kernel, stride, causal):
    for bm, bn in [((1, 4, 4), (1, 2, 8)), ((2, 2, 4), (1, 4, 4)), ((1, 1, 16), (2, 4, 2))]:
        assert walk_products(lengths, kernel, stride, causal, bm, bn) == \
            _walk_bruteforce(lengths, kernel, stride, causal, bm, bn)


@pytest.mark.parametrize("lengths,kernel,stride,causal", WALK_CASES)
def test_walk_products_by_keys_is_the_dkv_walk(lengths, kernel, stride, causal):
    for bm, bn in [((1, 4, 4), (1, 2, 8)), ((2, 2, 4), (1, 4, 4)), ((1, 1, 16), (2, 4, 2))]:
        assert walk_products(lengths, kernel, stride, causal, bm, bn, by_keys=True) == \
            _inverse_walk_bruteforce(lengths, kernel, stride, causal, bm, bn)


def test_choose_boxes_prefers_fewer_products():
    # 2-D window 17x17 on 96x96: an 8x8 query box walks 24x24 keys in 9 8x8 blocks (2.0x the
    # needed products); a 128-token box cannot do better than 2.4x.
    bm, bn, cost = choose_boxes((1, 96, 96), (1, 17, 17), (1, 1, 1), (False,) * 3, 64, 64)
    assert (bm, bn) == ((1, 8, 8), (1, 8, 8))
    assert cost / (96 * 96 * 17 * 17) == pytest.approx(2.0, abs=0.01)
    _, _, cost128 = choose_boxes((1, 96, 96), (1, 17, 17), (1, 1, 1), (False,) * 3, 128, 128)
    assert cost128 > cost
    # GNA with stride = query box: every walked product is needed
    bm, bn, cost = choose_boxes((1, 96, 96), (1, 16, 16), (1, 8, 16), (False,) * 3, 128, 128)
    assert cost == 96 * 96 * 16 * 16 and math.prod(bm) == math.prod(bn) == 128


def test_dkv_boxes_are_costed_as_the_dkv_walk():
    # NA-2D large's dK/dV tiles (32 queries x 64 keys): the boxes that are best for the forward
    # walk make the dK/dV walk 3x the needed products; costed as the dK/dV walk, 2x
    lengths, kernel, stride, causal = (1, 96, 96), (1, 17, 17), (1, 1, 1), (False,) * 3
    needed = 96 * 96 * 17 * 17
    bm, bn, _ = choose_boxes(lengths, kernel, stride, causal, 32, 64)
    assert walk_products(lengths, kernel, stride, causal, bm, bn, by_keys=True) / needed == pytest.approx(2.99, abs=0.01)
    bm, bn, cost = choose_boxes(lengths, kernel, stride, causal, 32, 64, by_keys=True)
    assert cost == walk_products(lengths, kernel, stride, causal, bm, bn, by_keys=True)
    assert cost / needed == pytest.approx(1.99, abs=0.01)


def test_gpu_forward_boxes_for_small_windows(monkeypatch):
    """The GPU plan's forward boxes (``kernels._plan`` off the interpreter): 32x32 boxes on one warp
    for 1-D/2-D problems at head dim 32 whose 64x64 walk is >= 1/0.7 as long; 64-row boxes for
    larger head dims, larger windows and 3-D problems (probe33), with 32-key boxes for 1-D/2-D
    problems above head dim 64 with windows under 512 keys (probe39/43/45, session 17) and for
    non-causal ones where they walk <= 0.98x the 64-key boxes' products (probe90, session 38), and
    128x128 boxes for windows of 1024+ keys only where the walk skips the window test (probe15,
    session 18)."""
    K = pytest.importorskip("ops.neighborhood.kernels")
    monkeypatch.setattr(K, "interpret_mode", lambda: False)

    def fwd_boxes(spatial, kernel, head_dim, causal=None):
        r = len(spatial)
        causal = causal or (False,) * r
        _, _, _, bm, bn = K._plan(spatial, r, kernel, (1,) * r, (1,) * r, causal, head_dim, "fwd")
        return math.prod(bm), math.prod(bn)

    assert fwd_boxes((56, 56), (7, 7), 32) == (32, 32)      # backbone: 3.17x vs 4.85x the needed products
    assert fwd_boxes((4096,), (7,), 32) == (32, 32)
    assert fwd_boxes((56, 56), (7, 7), 64) == (64, 64)      # the rule is measured at head dim 32 only
    assert fwd_boxes((96, 96), (17, 17), 32) == (64, 64)    # 1.99x walk: 32x32 boxes save too little
    assert fwd_boxes((96, 96), (17, 17), 128) == (64, 32)   # 1-D/2-D above head dim 64: 32-key boxes
    assert fwd_boxes((4096,), (257,), 128) == (64, 32)
    assert fwd_boxes((64, 64), (33, 33), 128) == (64, 32)   # 1089 keys: 0.95x the 64-key walk
    assert fwd_boxes((128, 128), (25, 25), 128) == (64, 64)  # 625 keys: 0.996x, too little saved
    assert fwd_boxes((8192,), (513,), 128) == (64, 64)      # 0.997x
    assert fwd_boxes((20, 48, 80), (7, 15, 15), 128) == (64, 32)  # NA-3D video: 0.957x
    assert fwd_boxes((16, 32, 32), (5, 9, 9), 128, (True, False, False)) == (64, 64)  # not causal ones
    assert fwd_boxes((20, 48, 80), (7, 15, 15), 64) == (64, 64)   # nor at head dim 64
    assert fwd_boxes((8, 28, 28), (3, 7, 7), 32) == (64, 64)  # slower on 3-D
    assert fwd_boxes((32768,), (2049,), 128) == (64, 64)    # 128x128 only where no window test runs:
    gna3d = K._plan((20, 48, 80), 3, (8, 16, 16), (1, 1, 1), (2, 8, 8), (False,) * 3, 128, "fwd")
    assert (math.prod(gna3d[3]), math.prod(gna3d[4])) == (128, 128)   # GNA-3D's query boxes are stride groups
    dq = K._plan((56, 56), 2, (7, 7), (1, 1), (1, 1), (False,) * 2, 32, "dq")
    assert math.prod(dq[3]) == 64                           # dQ keeps 64-row boxes (16/32 rows were not faster)

    import triton
    configs = [triton.Config({}, num_warps=w, num_stages=s) for w, s in [(4, 2), (4, 3), (8, 2), (8, 3)]]
    small = K._fwd_warps(configs, {}, BM0=1, BM1=4, BM2=8)
    assert {c.num_warps for c in small} == {1} and {c.num_stages for c in small} == {2, 3}
    # off the interpreter each stage count is also offered with a 128-register cap (probe43)
    caps = [None] if K.interpret_mode() else [None, 128]
    assert sorted((c.num_stages, c.maxnreg or 0) for c in small) == [(s, r or 0) for s in (2, 3) for r in caps]
    assert {c.num_warps for c in K._fwd_warps(configs, {}, BM0=1, BM1=8, BM2=8)} == {4}
    assert {c.num_warps for c in K._fwd_warps(configs, {}, BM0=1, BM1=8, BM2=16)} == {8}


# (length, kernel, stride, causal): odd and even kernels and strides, windows as long as the axis
QUERY_RANGE_CASES = [(13, 5, 1, False), (12, 4, 3, False), (9, 9, 2, False), (11, 3, 2, True), (16, 6, 4, True),
                     (40, 17, 1, False), (40, 16, 16, False), (37, 11, 5, True), (23, 8, 7, False), (7, 7, 1, True)]


def _query_range_bruteforce(first_key, last_key, length, kernel, stride, causal):
    hits = [i for i in range(length)
            if axis_window(i, length, kernel, stride, causal)[1] >= first_key
            and axis_window(i, length, kernel, stride, causal)[0] <= last_key]
    return hits[0], hits[-1]


@pytest.mark.parametrize("length,kernel,stride,causal", QUERY_RANGE_CASES)
def test_query_range_matches_bruteforce(length, kernel, stride, causal):
    """Every key range [first, last] of the axis: the binary searches find the exact query range."""
    for first in range(length):
        for last in range(first, length):
            assert query_range(first, last, length, kernel, stride, causal) == \
                _query_range_bruteforce(first, last, length, kernel, stride, causal), (first, last)
            # swapped: the queries whose windows hold all of [first, last] (dK/dV's window core)
            holds = [i for i in range(length) if axis_window(i, length, kernel, stride, causal)[0] <= first
                     and axis_window(i, length, kernel, stride, causal)[1] >= last]
            core = query_range(last, first, length, kernel, stride, causal)
            assert (core == (holds[0], holds[-1])) if holds else core[0] > core[1], (first, last, core)


@triton.jit
def _ranges_kernel(JF, JL, OUT, Lg, K: tl.constexpr, S: tl.constexpr, CAUSAL: tl.constexpr):
    pid = tl.program_id(0)
    first, last = _query_range(tl.load(JF + pid), tl.load(JL + pid), Lg, K, S, CAUSAL)
    tl.store(OUT + 2 * pid, first)
    tl.store(OUT + 2 * pid + 1, last)


@pytest.mark.kernel
def test_kernel_query_range_matches_host(device):
    """The dK/dV kernel's ``_query_range`` (one program per key range, also swapped) against the host's."""
    for length, kernel, stride, causal in QUERY_RANGE_CASES:
        pairs = [(f, l) for f in range(length) for l in range(max(f - 9, 0), min(f + 9, length))]
        jf = torch.tensor([p[0] for p in pairs], dtype=torch.int32, device=device)
        jl = torch.tensor([p[1] for p in pairs], dtype=torch.int32, device=device)
        out = torch.full((len(pairs), 2), -1, dtype=torch.int32, device=device)
        _ranges_kernel[(len(pairs),)](jf, jl, out, length, kernel, stride, causal)
        expected = [query_range(f, l, length, kernel, stride, causal) for f, l in pairs]
        assert out.tolist() == [list(e) for e in expected], (length, kernel, stride, causal)


def _core_share_bruteforce(lengths, kernel, stride, causal, bm, bn, by_keys):
    """Share of the walk's (owned box, walked box) pairs whose every (query, key) pair is inside
    the query's window, by enumeration; a walked query box with rows past the axis is not (its
    rows need the walk's mask)."""
    walked = core = 0
    owned = bn if by_keys else bm
    for t in itertools.product(*[range(-(-n // m)) for n, m in zip(lengths, owned)]):
        per_axis = []
        for a in range(3):
            own = range(t[a] * owned[a], min(t[a] * owned[a] + owned[a], lengths[a]))
            win = [axis_window(i, lengths[a], kernel[a], stride[a], causal[a]) for i in range(lengths[a])]
            if by_keys:   # walked query boxes from the first query whose window meets the key box
                first, last = query_range(own[0], own[-1], lengths[a], kernel[a], stride[a], causal[a])
                boxes = [range(s, s + bm[a]) for s in range(first, last + 1, bm[a])]
                inside = [all(i < lengths[a] and win[i][0] <= j <= win[i][1] for i in box for j in own)
                          for box in boxes]
            else:         # walked key boxes from the union's low corner
                lo, hi = win[own[0]][0], win[own[-1]][1]
                boxes = [range(s, s + bn[a]) for s in range(lo, hi + 1, bn[a])]
                inside = [all(win[i][0] <= j <= win[i][1] for i in own for j in box) for box in boxes]
            per_axis.append((len(inside), sum(inside)))
        walked += math.prod(n for n, _ in per_axis)
        core += math.prod(c for _, c in per_axis)
    return core / walked


@pytest.mark.parametrize("by_keys", [False, True])
@pytest.mark.parametrize("lengths,kernel,stride,causal,bm,bn", [
    ((1, 1, 40), (1, 1, 17), (1, 1, 1), (False,) * 3, (1, 1, 8), (1, 1, 4)),
    ((1, 1, 37), (1, 1, 11), (1, 1, 2), (False, False, True), (1, 1, 4), (1, 1, 4)),
    ((1, 8, 9), (1, 7, 5), (1, 2, 1), (False, False, True), (1, 2, 4), (1, 2, 2)),
    ((3, 3, 9), (3, 3, 7), (1, 2, 1), (False,) * 3, (1, 2, 4), (1, 1, 4)),
])
def test_core_fraction_matches_bruteforce(lengths, kernel, stride, causal, bm, bn, by_keys):
    from ops.neighborhood.tiling import core_fraction

    expected = _core_share_bruteforce(lengths, kernel, stride, causal, bm, bn, by_keys)
    assert core_fraction(lengths, kernel, stride, causal, bm, bn, by_keys) == pytest.approx(expected)
