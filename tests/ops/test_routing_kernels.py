"""Fused region routing (``ops.routing.kernels.region_topk``) vs ``region_routing`` in fp64.

Near-ties may legitimately reorder, so random inputs are checked by value: the fp64 affinities
of the returned regions must equal the fp64 top-k affinities slot by slot (which also checks the
descending order), the ids must be distinct and in range, and every output slot written (the
buffer starts at -7). Inputs built with affinities a whole unit apart must match exactly. Shapes
cover 2x2 / 2x3 / 7x7 / 8x8 region grids, topk = 1, a few and R, the token loop (T > BLOCK_T),
the channel loops of both kernels (C = 130, 512), qkv channel slices, channels-first views
(channel stride != 1) and contiguous maps.
"""
from __future__ import annotations

import pytest
import torch

from ops.routing.kernels import region_topk
from ops.routing.reference import region_routing, to_regions

from .helpers import fresh_generator, kernel_dtypes, randn


def _layout(B, Y, X, C, dtype, device, gen, layout):
    """q, k: [B, Y, X, C] views in the given memory layout."""
    if layout == "qkv":  # channel slices of one projection: row strides 3C
        qkv = randn(B, Y, X, 3 * C, dtype=dtype, device=device, gen=gen)
        return qkv[..., :C], qkv[..., C:2 * C]
    if layout == "channels_first":  # last-dim stride Y*X
        q, k = (randn(B, C, Y, X, dtype=dtype, device=device, gen=gen).permute(0, 2, 3, 1) for _ in range(2))
        return q, k
    return tuple(randn(B, Y, X, C, dtype=dtype, device=device, gen=gen) for _ in range(2))


def _affinity64(q, k, regions, scale):
    q_r, k_r = (to_regions(t.double().cpu(), regions).mean(2) for t in (q, k))
    return (q_r * scale) @ k_r.transpose(-1, -2), (q_r.abs() * abs(scale)) @ k_r.abs().transpose(-1, -2)


def _run(q, k, regions, topk, scale):
    B, R = q.shape[0], regions[0] * regions[1]
    out = torch.full((B, R, topk), -7, dtype=torch.int32, device=q.device)  # unwritten slots stay -7
    idx = region_topk(q, k, regions, topk, scale, out=out)
    assert idx is out and idx.dtype == torch.int32 and idx.is_contiguous() and idx.shape == (B, R, topk)
    return idx.cpu()


def _check_by_value(idx, q, k, regions, topk, scale, what):
    R = regions[0] * regions[1]
    assert idx.min() >= 0 and idx.max() < R, f"{what}: ids outside [0, {R}) (unwritten slot?)"
    assert (idx.sort(-1).values.diff(dim=-1) != 0).all(), f"{what}: repeated region ids in a row"
    aff, aff_abs = _affinity64(q, k, regions, scale)
    ref = region_routing(q.double().cpu(), k.double().cpu(), regions, topk, scale)
    got_v, ref_v = aff.gather(-1, idx.long()), aff.gather(-1, ref)
    tol = 1e-5 * aff_abs.amax().item()  # fp32 accumulation over tokens and channels
    err = (got_v - ref_v).abs().max().item()
    assert err <= tol, f"{what}: affinity of chosen regions off the fp64 top-k by {err:.2e} > {tol:.2e}"


# (B, regions, (Y, X), C, topks, layout)
CASES = [
    (2, (2, 2), (4, 6), 24, (1, 2, 4), "qkv"),
    (1, (2, 2), (12, 12), 64, (3,), "channels_first"),  # T = 36 > BLOCK_T: token loop
    (2, (2, 3), (6, 9), 130, (1, 6), "qkv"),  # non-square grid, masked channel tail
    (1, (2, 2), (2, 2), 512, (2,), "contiguous"),  # T = 1, channel loops in both kernels
    (1, (7, 7), (14, 14), 40, (1, 4, 49), "qkv"),
    (1, (8, 8), (8, 16), 32, (4, 64), "qkv"),  # R = 64 (n_win 8), topk = R
]


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-r{c[1][0]}x{c[1][1]}-{c[2][0]}x{c[2][1]}-C{c[3]}")
def test_region_topk_random(device, dtype, case):
    B, regions, (Y, X), C, topks, layout = case
    gen, seed = fresh_generator()
    q, k = _layout(B, Y, X, C, dtype, device, gen, layout)
    scale = C ** -0.5
    for topk in topks:
        idx = _run(q, k, regions, topk, scale)
        _check_by_value(idx, q, k, regions, topk, scale, f"{case} topk={topk} {dtype} seed={seed}")


def _separated(B, regions, Y, X, C, dtype, device, gen):
    """q/k whose region-mean affinities are distinct integers per row (times the scale): k's
    region j mean is the one-hot e_j, q's region r mean is a random permutation of 0..R-1, plus
    token noise with zero region mean, so the top-k order is exact in every dtype."""
    ny, nx = regions
    R, th, tw = ny * nx, Y // ny, X // nx
    perms = torch.stack([torch.randperm(R, generator=gen) for _ in range(B * R)]).view(B, R, R).double()
    q_r = torch.zeros(B, R, C, dtype=torch.float64)
    q_r[..., :R] = perms
    k_r = torch.zeros(B, R, C, dtype=torch.float64)
    k_r[..., :R] = torch.eye(R, dtype=torch.float64)

    def tokens(means):
        noise = torch.randn(B, R, th * tw, C, generator=gen, dtype=torch.float64) * 0.1
        x = means[:, :, None] + noise - noise.mean(2, keepdim=True)
        x = x.view(B, ny, nx, th, tw, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Y, X, C)
        return x.to(device=device, dtype=dtype)

    return tokens(q_r), tokens(k_r)


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("regions,size,C,topks", [((2, 3), (4, 6), 8, (1, 4, 6)), ((7, 7), (7, 14), 64, (49,))],
                         ids=["r2x3", "r7x7"])
def test_region_topk_exact(device, dtype, regions, size, C, topks):
    gen, seed = fresh_generator()
    q, k = _separated(2, regions, *size, C, dtype, device, gen)
    for topk in topks:
        idx = _run(q, k, regions, topk, 0.25)
        ref = region_routing(q.double().cpu(), k.double().cpu(), regions, topk, 0.25)
        assert torch.equal(idx.long(), ref), f"{regions} topk={topk} {dtype}: ids differ, seed={seed}"


@pytest.mark.kernel
def test_region_topk_ties_and_layouts(device):
    """All-equal affinities give distinct ids, lowest first; a strided map and its contiguous
    copy route identically; a negative scale reverses the order."""
    gen, seed = fresh_generator()
    regions, R = (2, 3), 6
    k = randn(1, 4, 6, 16, dtype=torch.float32, device=device, gen=gen)
    idx = region_topk(torch.zeros_like(k), k, regions, R, 1.0)  # no `out`: the allocating path
    assert idx.dtype == torch.int32 and idx.is_contiguous()
    assert torch.equal(idx.cpu(), torch.arange(R, dtype=torch.int32).expand(1, R, R)), f"ties, seed={seed}"
    q, k = _layout(2, 4, 6, 16, torch.float32, device, gen, "channels_first")
    a = region_topk(q, k, regions, R, 1.0)
    assert torch.equal(a, region_topk(q.contiguous(), k.contiguous(), regions, R, 1.0)), f"layouts, seed={seed}"
    _check_by_value(a.cpu(), q, k, regions, R, 1.0, f"scale 1, seed={seed}")
    _check_by_value(region_topk(q, k, regions, R, -1.0).cpu(), q, k, regions, R, -1.0, f"scale -1, seed={seed}")
