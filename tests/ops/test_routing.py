"""Bi-level routing attention: the fused block-sparse kernel vs the fp64 gather reference.

Forward and gradients of q, k, v; random routings with repeated regions, every query routed
to the same boundary region, the op's own routing; tiles of 4, 12, 16 and 64 tokens (packing,
non-power-of-two tiles, query tiles split across programs); odd sizes with padding; NaN-
poisoned output buffers; non-contiguous inputs read in place.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops
from ops.common.block_sparse import block_sparse_attention_backward, block_sparse_attention_forward
from ops.routing import region_routing, routing_attention_reference

from .helpers import assert_close, far_batch_views, fresh_generator, kernel_dtypes, poisoned, randn


def _routing(kind: str, B: int, R: int, topk: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "random_repeats":  # regions may repeat within one list, as a gather would allow
        return torch.randint(0, R, (B, R, topk), generator=gen)
    if kind == "boundary":  # every query region routes to the last region (and the first)
        idx = torch.full((B, R, topk), R - 1)
        idx[..., 0] = 0
        return idx
    return torch.stack([torch.randperm(R, generator=gen)[:topk] for _ in range(B * R)]).view(B, R, topk)


def _reference64(q, k, v, idx, regions, heads, scale, grad):
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    out, lse = routing_attention_reference(*leaves, idx, regions, heads, scale, return_lse=True)
    grads = torch.autograd.grad(out, leaves, grad.double())
    return out, lse, grads


# (B, Y, X, C, heads, regions, topk, routing): tiles of 16, 4 (4 tiles packed per 16-row block),
# 12 (not a power of two) and 32 tokens (query tile split over programs; 16-row blocks under the
# interpreter); packing with a ragged last group (9 tiles of 4, 6 tiles of 6 in 12 of 16 rows)
# and 1-token tiles (16 per block; 64 of them with 17 routed each: the inverse lists take chunks);
# tiles one token high
CASES = [(1, 8, 8, 32, 1, (2, 2), 2, "random_repeats"), (1, 4, 8, 64, 2, (2, 4), 3, "random_repeats"),
         (1, 8, 9, 32, 1, (2, 3), 3, "boundary"), (1, 8, 8, 32, 1, (1, 2), 2, "random_repeats"),
         (2, 8, 8, 32, 2, (2, 2), 2, "random"),   # B = 2: inverse lists and strides per batch item
         (2, 6, 6, 32, 1, (3, 3), 4, "random_repeats"), (1, 6, 6, 32, 2, (3, 2), 2, "boundary"),
         (1, 4, 4, 32, 1, (4, 4), 3, "random"),
         (1, 8, 8, 32, 1, (8, 8), 17, "random_repeats"),   # 1088 listings: the inverse lists scan 2 chunks
         # tiles one token high: the core's sequence path with fixed-length lists (16-token
         # tiles step by whole tiles under the interpreter, 128-token ones on the GPU)
         (1, 4, 32, 32, 2, (4, 2), 3, "random_repeats"), (1, 2, 256, 64, 2, (2, 2), 2, "random")]


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[1:3])) + f"-r{c[5][0]}x{c[5][1]}-k{c[6]}-{c[7]}")
def test_kernel_forward_backward_vs_fp64(device, dtype, case):
    B, Y, X, C, heads, regions, topk, kind = case
    gen, seed = fresh_generator()
    q, k, v, g = (randn(B, Y, X, C, dtype=dtype, device=device, gen=gen) for _ in range(4))
    R = regions[0] * regions[1]
    idx = _routing(kind, B, R, topk, gen).to(device)
    tile = (Y // regions[0], X // regions[1])
    scale = 0.7 * (C // heads) ** -0.5
    out, lse = block_sparse_attention_forward(
        q, k, v, idx, tile, heads, scale, out=poisoned(B, Y, X, C, dtype=dtype, device=device),
        lse=poisoned(B, Y, X, heads, dtype=torch.float32, device=device))
    ref, ref_lse, (dq_ref, dk_ref, dv_ref) = _reference64(q, k, v, idx, regions, heads, scale, g)
    assert_close(out, ref, dtype, f"out {case} {kind}", seed)
    assert_close(lse, ref_lse, torch.float32 if dtype == torch.float32 else dtype, f"lse {case} {kind}", seed)
    dq, dk, dv = block_sparse_attention_backward(
        g, q, k, v, out, lse, idx, tile, heads, scale,
        *(poisoned(B, Y, X, C, dtype=dtype, device=device) for _ in range(3)))
    assert_close(dq, dq_ref, dtype, f"dq {case} {kind}", seed)
    assert_close(dk, dk_ref, dtype, f"dk {case} {kind}", seed)
    assert_close(dv, dv_ref, dtype, f"dv {case} {kind}", seed)


@pytest.mark.kernel
def test_public_op_routed_padded_noncontiguous(device):
    """routing_attention end to end: its own routing, a map not divisible by the regions
    (zero-padded right/bottom, cropped), q/k/v as channel slices of one qkv tensor, autograd."""
    gen, seed = fresh_generator()
    B, Y, X, C, heads, n, topk = 1, 7, 9, 64, 2, (2, 3), 2
    qkv = randn(B, Y, X, 3 * C, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    q, k, v = qkv.split(C, dim=-1)
    out, idx = ops.routing_attention(q, k, v, n, topk, num_heads=heads, return_indices=True)
    assert idx.shape == (B, 6, topk) and idx.dtype == torch.int64
    g = randn(B, Y, X, C, dtype=torch.float32, device=device, gen=gen)
    out.backward(g)

    qkv64 = qkv.detach().double().requires_grad_(True)
    padded = F.pad(qkv64, (0, 0, 0, 0, 0, 1))  # to 8 x 9: regions of 4 x 3
    q64, k64, v64 = padded.split(C, dim=-1)
    idx64 = region_routing(q64, k64, n, topk, (C // heads) ** -0.5)
    assert torch.equal(idx64.cpu().sort(-1).values, idx.cpu().sort(-1).values), f"routing differs, seed={seed}"
    ref = routing_attention_reference(q64, k64, v64, idx64, n, heads, (C // heads) ** -0.5)[:, :Y, :X]
    ref.backward(g.double())
    assert_close(out, ref, torch.float32, "out (padded, strided)", seed)
    assert_close(qkv.grad, qkv64.grad, torch.float32, "d qkv (padded, strided)", seed)


@pytest.mark.kernel
def test_batch_offsets_past_2_31_elements(device):
    """q, k, v whose last batch item starts past 2**31 elements (batch stride < 2**31): routing,
    forward and backward must not wrap their batch offsets. Items 0 and 2 vs the fp64 reference."""
    gen, seed = fresh_generator()
    C, heads, n, topk = 32, 1, (2, 2), 2
    q, k, v = (t.detach().requires_grad_() for t in far_batch_views(3, (8, 8, C), torch.float16, device, gen))
    out, idx = ops.routing_attention(q, k, v, n, topk, num_heads=heads, return_indices=True)
    g = randn(*out.shape, dtype=torch.float16, device=device, gen=gen)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), g)
    for b in (0, 2):
        q64, k64, v64 = (t[b:b + 1].detach().double().requires_grad_() for t in (q, k, v))
        idx64 = region_routing(q64, k64, n, topk, C ** -0.5)
        assert torch.equal(idx64.cpu().sort(-1).values, idx[b:b + 1].cpu().sort(-1).values), \
            f"routing of item {b} differs, seed={seed}"
        ref = routing_attention_reference(q64, k64, v64, idx64, n, heads, C ** -0.5)
        ref.backward(g[b:b + 1].double())
        assert_close(out[b:b + 1], ref, torch.float16, f"out of item {b}", seed)
        for name, got, r in (("dq", dq, q64.grad), ("dk", dk, k64.grad), ("dv", dv, v64.grad)):
            assert_close(got[b:b + 1], r, torch.float16, f"{name} of item {b}", seed)


@pytest.mark.kernel
def test_flat_grid(monkeypatch, device):
    """The flat launch grid that batch * heads past 65535 takes (here from 2 on): forward and
    gradients vs the fp64 reference, packed and split tiles."""
    import ops.common.tuning as tuning

    monkeypatch.setattr(tuning, "GRID_Y_MAX", 1)
    gen, seed = fresh_generator()
    for B, Y, X, C, heads, regions, topk in ((2, 4, 8, 64, 2, (2, 4), 3), (1, 12, 8, 64, 2, (1, 2), 2)):
        q, k, v, g = (randn(B, Y, X, C, dtype=torch.float32, device=device, gen=gen) for _ in range(4))
        R = regions[0] * regions[1]
        idx = _routing("random_repeats", B, R, topk, gen).to(device)
        tile = (Y // regions[0], X // regions[1])
        out, lse = block_sparse_attention_forward(q, k, v, idx, tile, heads, 0.3)
        ref, ref_lse, grads_ref = _reference64(q, k, v, idx, regions, heads, 0.3, g)
        assert_close(out, ref, torch.float32, f"out B{B} {Y}x{X}", seed)
        grads = block_sparse_attention_backward(g, q, k, v, out, lse, idx, tile, heads, 0.3)
        for name, got, r in zip(("dq", "dk", "dv"), grads, grads_ref):
            assert_close(got, r, torch.float32, f"{name} B{B} {Y}x{X}", seed)


@pytest.mark.kernel
@pytest.mark.skipif(not torch.cuda.is_available(), reason="grid limits are the GPU's (the interpreter has none)")
def test_batch_times_heads_past_65535():
    """More (batch, head) pairs than a CUDA grid's second axis holds (65535): routing, forward
    and gradients of the last items vs the fp64 reference."""
    gen, seed = fresh_generator()
    C, heads, n, topk = 64, 2, (2, 2), 2
    q, k, v = (randn(33000, 4, 4, C, dtype=torch.float16, device="cuda", gen=gen, requires_grad=True)
               for _ in range(3))
    out, idx = ops.routing_attention(q, k, v, n, topk, num_heads=heads, return_indices=True)
    g = randn(*out.shape, dtype=torch.float16, device="cuda", gen=gen)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), g)
    tail = slice(32950, None)
    q64, k64, v64 = (t[tail].detach().double().requires_grad_() for t in (q, k, v))
    scale = (C // heads) ** -0.5
    ref = routing_attention_reference(q64, k64, v64, idx[tail], n, heads, scale)
    ref.backward(g[tail].double())
    assert_close(out[tail], ref, torch.float16, "out of the last items", seed)
    for name, got, r in (("dq", dq, q64.grad), ("dk", dk, k64.grad), ("dv", dv, v64.grad)):
        assert_close(got[tail], r, torch.float16, f"{name} of the last items", seed)


def test_reference_matches_dense_masked_attention():
    """Second oracle for the reference: dense attention with a region mask (distinct regions)."""
    gen, seed = fresh_generator()
    B, Y, X, C, heads, regions, topk = 2, 4, 6, 16, 2, (2, 3), 3
    q, k, v = (randn(B, Y, X, C, dtype=torch.float64, device="cpu", gen=gen) for _ in range(3))
    idx = _routing("distinct", B, 6, topk, gen)
    out = routing_attention_reference(q, k, v, idx, regions, heads, 0.5)
    region_of = (torch.arange(Y)[:, None] // 2 * 3 + torch.arange(X)[None, :] // 2).reshape(-1)  # token -> region
    allowed = torch.zeros(B, Y * X, Y * X, dtype=torch.bool)
    for b in range(B):
        allowed[b] = (region_of[None, :, None] == idx[b][region_of][:, None, :]).any(-1)
    qh, kh, vh = (t.reshape(B, Y * X, heads, C // heads).transpose(1, 2) for t in (q, k, v))
    dense = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed[:, None], scale=0.5)
    dense = dense.transpose(1, 2).reshape(B, Y, X, C)
    assert_close(out, dense, torch.float64, "reference vs dense mask", seed)


def test_reference_gradcheck():
    gen, _ = fresh_generator()
    q, k, v = (randn(1, 2, 4, 4, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True) for _ in range(3))
    idx = _routing("random_repeats", 1, 2, 2, gen)
    assert torch.autograd.gradcheck(
        lambda a, b, c: routing_attention_reference(a, b, c, idx, (1, 2), 2, 0.4), (q, k, v))


def test_cpu_reference_path_and_routing_shape():
    """Off the kernel path (FOVEAL_FORCE_REFERENCE) the op runs the reference, with gradients."""
    gen, _ = fresh_generator()
    q, k, v = (randn(2, 6, 6, 64, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True) for _ in range(3))
    import os
    old = os.environ.get("FOVEAL_FORCE_REFERENCE")
    os.environ["FOVEAL_FORCE_REFERENCE"] = "1"
    try:
        out, idx = ops.routing_attention(q, k, v, 3, 4, return_indices=True)
        out.sum().backward()
    finally:
        os.environ.pop("FOVEAL_FORCE_REFERENCE") if old is None else os.environ.__setitem__("FOVEAL_FORCE_REFERENCE", old)
    ref = routing_attention_reference(q, k, v, idx, (3, 3), 2, 32 ** -0.5)
    assert idx.shape == (2, 9, 4)
    assert torch.allclose(out, ref) and torch.isfinite(q.grad).all()


@pytest.mark.parametrize("call, err, match", [
    (lambda q: ops.routing_attention(q[0], q, q, 2, 1), ValueError, "q must have 4 dimensions"),
    (lambda q: ops.routing_attention(q, q[..., :32], q, 2, 1), ValueError, "same shape"),
    (lambda q: ops.routing_attention(q, q, q, 2, 5), ValueError, "topk"),
    (lambda q: ops.routing_attention(q, q, q, 9, 1), ValueError, "num_regions"),
    (lambda q: ops.routing_attention(q, q, q, 2, 1, num_heads=3), ValueError, "num_heads"),
    (lambda q: ops.routing_attention(q, q, q, 2, 1, num_heads=0), ValueError, "num_heads must be >= 1"),
    (lambda q: ops.routing_attention(q, q, q, 2, 1, num_heads=True), TypeError, "num_heads must be an int"),
    (lambda q: ops.routing_attention(q, q, q, 2, 2.0), TypeError, "topk must be an int, got float"),
    (lambda q: ops.routing_attention(q[..., :0], q[..., :0], q[..., :0], 2, 1, num_heads=1), ValueError,
     "at least one channel"),
    (lambda q: ops.routing_attention(q[..., :0], q[..., :0], q[..., :0], 2, 1), ValueError, "positive multiple of 32"),
    (lambda q: ops.routing_attention(q.long(), q.long(), q.long(), 2, 1), TypeError, "float"),
    (lambda q: ops.routing_attention(q, q, q, 2, 1, routing_indices=torch.full((1, 4, 1), 4)), ValueError, "lie in"),
    (lambda q: ops.routing_attention(q, q, q, 2, 1, routing_indices=torch.zeros(1, 3, 1, dtype=torch.long)),
     ValueError, "routing_indices must be"),
])
def test_bad_input_errors(call, err, match):
    q = torch.randn(1, 8, 8, 64)
    with pytest.raises(err, match=match):
        call(q)


def test_reference_backward_matches_autograd():
    gen, seed = fresh_generator()
    q, k, v, g = (randn(2, 4, 6, 16, dtype=torch.float64, device="cpu", gen=gen) for _ in range(4))
    idx = _routing("random_repeats", 2, 6, 4, gen)
    _, _, want = _reference64(q, k, v, idx, (2, 3), 2, 0.3, g)
    from ops.routing.reference import routing_attention_reference_backward
    got = routing_attention_reference_backward(g, q, k, v, idx, (2, 3), 2, 0.3)
    for name, a, b in zip("qkv", got, want):
        assert_close(a, b, torch.float64, f"d{name}", seed)


def test_torch_compile_fullgraph():
    """The registered ops trace without graph breaks (forward and backward)."""
    gen, seed = fresh_generator()
    q, k, v = (randn(1, 8, 8, 64, dtype=torch.float32, device="cpu", gen=gen, requires_grad=True) for _ in range(3))
    fn = torch.compile(lambda a, b, c: ops.routing_attention(a, b, c, 2, 2), fullgraph=True, backend="aot_eager")
    out = fn(q, k, v)
    out.sum().backward()
    ref = ops.routing_attention(q.detach(), k.detach(), v.detach(), 2, 2)
    assert_close(out, ref.double(), torch.float32, "compiled out", seed)
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
