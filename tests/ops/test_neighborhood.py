"""Neighborhood attention 1-D/2-D/3-D: fused Triton forward and backward vs the fp64 reference,
dense equivalence, the reference's gradcheck, and one test per argument rule."""
import random

import pytest
import torch

import ops
from ops.common import interpret_mode
from ops.neighborhood.reference import (neighborhood_attention_reference,
                                        neighborhood_attention_reference_backward)
from tests.ops.helpers import assert_close, far_batch_views, fresh_generator, kernel_dtypes, poisoned, randn

# Interpreter-sized shapes (every kernel program is emulated in Python); bigger on the GPU.
MAX_LEN = {1: 40, 2: 9, 3: 5} if interpret_mode() else {1: 300, 2: 40, 3: 14}


def _random_case(rng: random.Random, rank: int) -> dict:
    shape = tuple(rng.randint(3, MAX_LEN[rank]) for _ in range(rank))
    kernel, dilation, stride, causal = [], [], [], []
    for length in shape:
        d = rng.choice([1, 1, 2]) if length >= 4 else 1
        k = rng.randint(1 if rank > 1 else 2, max(1, min(length // d, 9)))
        kernel.append(k)
        dilation.append(d)
        stride.append(rng.randint(1, k))
        causal.append(rng.random() < 0.3)
    heads = rng.choice([1, 2, 4])
    return dict(shape=shape, kernel=tuple(kernel), dilation=tuple(dilation), stride=tuple(stride),
                causal=tuple(causal), batch=rng.randint(1, 2), heads=heads,
                kv_heads=rng.choice([h for h in (1, 2, 4) if heads % h == 0]),
                dim=rng.choice([16, 32]), dim_v=rng.choice([16, 32]),
                extra=rng.choice([0, 0, 5]))


def _inputs(c: dict, dtype, device, gen):
    b, shape = c["batch"], c["shape"]
    q = randn(b, *shape, c["heads"], c["dim"], dtype=dtype, device=device, gen=gen)
    k = randn(b, *shape, c["kv_heads"], c["dim"], dtype=dtype, device=device, gen=gen)
    v = randn(b, *shape, c["kv_heads"], c["dim_v"], dtype=dtype, device=device, gen=gen)
    ek = ev = None
    if c["extra"]:
        ek = randn(b, c["extra"], c["kv_heads"], c["dim"], dtype=dtype, device=device, gen=gen)
        ev = randn(b, c["extra"], c["kv_heads"], c["dim_v"], dtype=dtype, device=device, gen=gen)
    return q, k, v, ek, ev


def _d(t):
    return None if t is None else t.double()


def _check_against_reference(c: dict, dtype, device, gen, seed, boxes=None, inputs=None) -> None:
    """Forward (O, LSE) and all gradients of case ``c`` vs the fp64 reference, into NaN-poisoned
    buffers; ``boxes`` overrides the kernels' (query box, key box), ``inputs`` the random q, k, v,
    extra k, extra v."""
    from ops.neighborhood.kernels import na_backward, na_forward

    q, k, v, ek, ev = inputs or _inputs(c, dtype, device, gen)
    win = (c["kernel"], c["dilation"], c["stride"], c["causal"])
    scale = c["dim"] ** -0.5
    out = poisoned(*q.shape[:-1], c["dim_v"], dtype=dtype, device=device)
    lse = poisoned(*q.shape[:-1], dtype=torch.float32, device=device)
    na_forward(q, k, v, *win, scale, ek, ev, out=out, lse=lse, boxes=boxes)
    ref_out, ref_lse = neighborhood_attention_reference(_d(q), _d(k), _d(v), *win, scale, _d(ek), _d(ev))
    assert_close(out, ref_out, dtype, f"output {c}", seed)
    assert_close(lse, ref_lse, torch.float32 if dtype == torch.float32 else dtype, f"lse {c}", seed)

    grad_out = randn(*out.shape, dtype=dtype, device=device, gen=gen)
    grad_lse = randn(*lse.shape, dtype=torch.float32, device=device, gen=gen)
    bufs = tuple(poisoned(*t.shape, dtype=dtype, device=device) for t in (q, k, v, ek, ev) if t is not None)
    grads = na_backward(grad_out, grad_lse, q, k, v, out, lse, *win, scale, ek, ev, grads=bufs, boxes=boxes)
    ref = neighborhood_attention_reference_backward(_d(grad_out), grad_lse.double(), _d(q), _d(k), _d(v),
                                                    *win, scale, _d(ek), _d(ev))
    for name, g, r in zip(("dq", "dk", "dv", "d_extra_k", "d_extra_v"), grads, ref):
        assert_close(g, r, dtype, f"{name} {c}", seed)


@pytest.fixture(autouse=True)
def _tma_on_short_walks(monkeypatch):
    """Test-sized walks are far shorter than ``TMA_MIN_WALK``: let them take the TMA path too, so
    16-bit cases here run it (float32 and ``USE_TMA`` off run the pointer loads)."""
    import ops.neighborhood.kernels as K

    monkeypatch.setattr(K, "TMA_MIN_WALK", 0)


# 16-bit inputs load the walks' blocks through TMA descriptors by default (the interpreter runs
# them too) and by pointers when ``USE_TMA`` is off; float32 always by pointers
LOAD_PATHS = [pytest.param(dt, tma, id=f"{dt}-{'tma' if tma else 'pointers'}")
              for dt in kernel_dtypes() for tma in ((True, False) if dt.itemsize == 2 else (False,))]


@pytest.mark.kernel
@pytest.mark.parametrize("dtype, tma", LOAD_PATHS)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_kernels_match_fp64_reference(rank, dtype, tma, device, monkeypatch):
    """Random window settings: forward (O, LSE) and all gradients, into NaN-poisoned buffers."""
    import ops.neighborhood.kernels as K

    monkeypatch.setattr(K, "USE_TMA", tma)
    gen, seed = fresh_generator()
    c = _random_case(random.Random(seed), rank)
    q, k, v, ek, ev = _inputs(c, dtype, device, gen)
    assert K._tma(q.get_device(), dtype, K._padded_shape(q.shape), (c["dim"], c["dim_v"]), (K._s5(k, 2), K._s5(v, 2)),
                  True, 0) == tma
    _check_against_reference(c, dtype, device, gen, seed, inputs=(q, k, v, ek, ev))


def test_tma_rules(monkeypatch):
    """When the walks may load through TMA descriptors: walks of TMA_MIN_WALK tokens or more, 16-bit,
    power-of-two head dims, 16-byte aligned tensors and strides, a zero stride only on an axis of
    length 1, strides growing from the head axis out; never when switched off. And the walk lengths
    the rule reads."""
    import ops.neighborhood.kernels as K

    monkeypatch.setattr(K, "_tma_device", lambda device: True)
    monkeypatch.setattr(K, "TMA_MIN_WALK", 1024)
    shape3, long = (1, 6, 7), K.TMA_MIN_WALK
    q = torch.empty(2, 6, 7, 4, 32, dtype=torch.float16)
    packed = torch.empty(2, 6, 7, 3, 4, 32, dtype=torch.float16)[:, :, :, 0]   # token stride 3 * H * D
    s = K._s5(q, 2)
    assert K._tma(-1, torch.float16, shape3, (32, 32), (s, s), True, long)
    assert not K._tma(-1, torch.float16, shape3, (32, 32), (s, s), True, long - 1)
    assert K._tma(-1, torch.bfloat16, shape3, (32, 32), (K._s5(packed, 2),), True, long)
    assert not K._tma(-1, torch.float32, shape3, (32, 32), (s, s), True, long)
    assert not K._tma(-1, torch.float16, shape3, (32, 24), (s, s), True, long)    # head dim 24: a padded box
    assert not K._tma(-1, torch.float16, shape3, (32, 32), (s, s), False, long)   # a pointer off 16 bytes
    odd = torch.empty(2, 6, 7, 4, 36, dtype=torch.float16)[..., :32]              # 72-byte head stride
    assert not K._tma(-1, torch.float16, shape3, (32, 32), (K._s5(odd, 2),), True, long)
    expanded = q[:, :1].expand(2, 6, 7, 4, 32)                                      # stride 0 on a real axis
    assert not K._tma(-1, torch.float16, shape3, (32, 32), (K._s5(expanded, 2),), True, long)
    heads_first = torch.empty(2, 4, 6, 7, 32, dtype=torch.float16).movedim(1, -2)   # head stride > token's
    assert not K._tma(-1, torch.float16, shape3, (32, 32), (K._s5(heads_first, 2),), True, long)
    one_row = torch.empty(2, 1, 7, 4, 32, dtype=torch.float16)                      # a length-1 axis is free
    assert K._tma(-1, torch.float16, (1, 1, 7), (32, 32), (K._s5(one_row, 2),), True, long)
    monkeypatch.setattr(K, "USE_TMA", False)
    assert not K._tma(-1, torch.float16, shape3, (32, 32), (s, s), True, long)
    # walk lengths: a 1-D window of 9 keys walked in 16-token boxes (the interpreter's) from 16-query
    # boxes covers 16 + 8 keys, two boxes, per program away from the borders
    walk = K._walk((1, 64, 2, 16), 2, 16, (9,), (1,), (1,), (False,), "fwd", ((1, 1, 16), (1, 1, 16)))
    assert 16 <= walk <= 32
    # dK/dV: the walk repeats for every query head of a GQA group
    one = K._walk((1, 64, 4, 16), 4, 16, (9,), (1,), (1,), (False,), "dkv", ((1, 1, 16), (1, 1, 16)))
    assert K._walk((1, 64, 4, 16), 2, 16, (9,), (1,), (1,), (False,), "dkv", ((1, 1, 16), (1, 1, 16))) == 2 * one


# GNA with query boxes inside stride groups: the forward and dQ walks skip the per-element window
# test (mask mode 0: none; 1: the walk's bounds only), and the dK/dV walk tests key rows only (its
# mode 1). (shape, kernel, stride, causal, boxes, mode)
ALIGNED_GNA = [
    ((8, 16), (4, 8), (4, 8), (False, False), ((1, 2, 8), (1, 2, 8)), 0),
    ((8, 8), (5, 6), (4, 4), (False, False), ((1, 4, 4), (1, 2, 8)), 1),
    ((3, 4, 8), (2, 4, 4), (1, 4, 4), (True, False, False), ((1, 4, 4), (1, 4, 4)), 1),
    ((2, 3, 16), (2, 3, 8), (2, 3, 8), (False, False, False), ((2, 1, 8), (1, 2, 8)), 1),
]


# Windows larger than the boxes: key blocks inside every window of their query box (the box's
# window core) may skip the forward's and dQ's per-element window test (``CORE``), the others keep it;
# so may the dK/dV walk's query boxes whose every window holds the key box.
# (shape, kernel, dilation, stride, causal, boxes); boxes of 16+ tokens on the GPU (tl.dot's minimum)
WINDOW_CORE = [
    ((40,), (17,), (1,), (1,), (False,), ((1, 1, 8), (1, 1, 4))),
    ((37,), (11,), (2,), (2,), (True,), ((1, 1, 4), (1, 1, 4))),
    ((8, 9), (7, 5), (1, 1), (2, 1), (False, True), ((1, 2, 4), (1, 2, 2))),
    ((3, 3, 9), (3, 3, 7), (1, 1, 1), (1, 2, 1), (False, False, False), ((1, 2, 4), (1, 1, 4))),
] if interpret_mode() else [
    ((300,), (65,), (1,), (1,), (False,), ((1, 1, 32), (1, 1, 16))),
    ((200,), (41,), (2,), (2,), (True,), ((1, 1, 16), (1, 1, 16))),
    ((40, 40), (21, 17), (1, 1), (2, 1), (False, True), ((1, 4, 4), (1, 4, 4))),
    ((6, 12, 40), (3, 9, 21), (1, 1, 1), (1, 2, 1), (False, False, False), ((1, 2, 8), (1, 1, 16))),
]


def _has_core_blocks(shape, kernel, dilation, stride, causal, boxes) -> bool:
    """Whether some query box of the launch has a key block inside its window core, on every axis
    (the axes are independent, so per axis is enough)."""
    from ops.neighborhood.tiling import axis_window

    pad = 3 - len(shape)
    found = []
    for length, k, d, s, c, bm, bn in zip(shape, kernel, dilation, stride, causal, boxes[0][pad:], boxes[1][pad:]):
        ok = False
        for g in range(d):
            lg = -(-(length - g) // d)
            for t in range(-(-lg // bm)):
                first, last = min(t * bm, lg - 1), min(t * bm + bm - 1, lg - 1)
                u_lo = axis_window(first, lg, k, s, c)[0]
                x_lo, x_hi = axis_window(last, lg, k, s, c)[0], axis_window(first, lg, k, s, c)[1]
                ok |= any(x_lo <= u_lo + w * bn and u_lo + w * bn + bn - 1 <= x_hi for w in range(lg))
        found.append(ok)
    return all(found)


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("shape, kernel, dilation, stride, causal, boxes", WINDOW_CORE)
def test_window_core_blocks(shape, kernel, dilation, stride, causal, boxes, dtype, device, monkeypatch):
    import ops.neighborhood.kernels as K

    pad = (1,) * (3 - len(shape))
    assert K._mask_mode(*boxes, pad + kernel, pad + stride, (False,) * len(pad) + causal) == 2
    assert _has_core_blocks(shape, kernel, dilation, stride, causal, boxes)
    monkeypatch.setattr(K, "CORE_SHARE", 0.0)   # skip the test on core blocks whatever their share
    K._fwd_launch.cache_clear()                  # launch plans are cached per problem
    K._bwd_launch.cache_clear()
    win = (kernel, dilation, stride, causal)
    assert K._fwd_launch((1, *shape, 1, 16), 1, 32, *win, 0, torch.float32, 0.25, boxes)[2]["CORE"]
    bwd = K._bwd_launch((1, *shape, 1, 16), 1, 32, *win, 0, torch.float32, 0.25, False, boxes)
    assert bwd[2]["CORE"] and bwd[5]["CORE"]   # dQ and dK/dV
    gen, seed = fresh_generator()
    c = dict(shape=shape, kernel=kernel, dilation=dilation, stride=stride, causal=causal,
             batch=1, heads=1, kv_heads=1, dim=16, dim_v=32, extra=0)
    try:
        _check_against_reference(c, dtype, device, gen, seed, boxes=boxes)
    finally:
        K._fwd_launch.cache_clear()
        K._bwd_launch.cache_clear()


def test_core_skip_rule():
    """Walks skip the window test on core blocks only where they are most of the walk."""
    import ops.neighborhood.kernels as K
    from ops.neighborhood.tiling import core_fraction

    one = ((1, 1, 1), (False, False, False))
    # 1-D, 128-token boxes, window 2049 on 32768: 15 of 17 walked blocks are core blocks
    share = core_fraction((1, 1, 32768), (1, 1, 2049), *one, (1, 1, 128), (1, 1, 128))
    assert share == pytest.approx(0.89, abs=0.01)
    assert K._core_skip((1, 1, 32768), (1, 1, 1), ((1, 1, 2049), *one), (1, 1, 128), (1, 1, 128))
    # the same with the plan's 64-token boxes, and the dK/dV walk (32 query rows over 64 owned keys)
    assert K._core_skip((1, 1, 32768), (1, 1, 1), ((1, 1, 2049), *one), (1, 1, 64), (1, 1, 64))
    dkv_share = core_fraction((1, 1, 32768), (1, 1, 2049), *one, (1, 1, 32), (1, 1, 64), by_keys=True)
    assert dkv_share == pytest.approx(0.94, abs=0.01)
    # a 257-key window: 61% of both walks, under the rule (the branch cost 2.4% in the backward, probe46)
    assert not K._core_skip((1, 1, 4096), (1, 1, 1), ((1, 1, 257), *one), (1, 1, 32), (1, 1, 64), by_keys=True)
    # NA-2D large (8x8 query boxes, 4x8 key boxes, 17x17): 16%; a 7x7 window on 8x8 boxes: none
    window = ((1, 17, 17), *one)
    assert core_fraction((1, 96, 96), *window, (1, 8, 8), (1, 4, 8)) == pytest.approx(0.16, abs=0.01)
    assert not K._core_skip((1, 96, 96), (1, 1, 1), window, (1, 8, 8), (1, 4, 8))
    assert core_fraction((1, 56, 56), (1, 7, 7), *one, (1, 8, 8), (1, 8, 8)) == 0


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("ramp", [0.6, -0.3])
@pytest.mark.parametrize("rank", [1, 2])
def test_scores_that_climb_along_the_walk(rank, ramp, dtype, device):
    """Scores that rise (or fall) by several units per window along the last axis, so the online
    softmax's running maxima keep moving along the walk (random inputs barely move them after the
    first key block). Output, LSE and gradients vs the fp64 reference."""
    shape = ((40,) if rank == 1 else (9, 9)) if interpret_mode() else ((300,) if rank == 1 else (40, 40))
    kernel = ((17,) if rank == 1 else (7, 7)) if interpret_mode() else ((65,) if rank == 1 else (21, 21))
    boxes = ((1, 1, 8), (1, 1, 4)) if interpret_mode() and rank == 1 else None
    c = dict(shape=shape, kernel=kernel, dilation=(1,) * rank, stride=(1,) * rank, causal=(False,) * rank,
             batch=1, heads=2, kv_heads=1, dim=16, dim_v=16, extra=0)
    gen, seed = fresh_generator()
    q, k, v, _, _ = _inputs(c, torch.float32, "cpu", gen)
    u = torch.randn(16, generator=gen)
    u = u / u.norm() * 4
    # score of q ~ u against k ~ a * u / 4, at scale 1/4: ~a; a rises by 8 * ramp per window
    a = 1 + 8 * ramp * torch.arange(shape[-1], dtype=torch.float32) / kernel[-1]
    q = u + 0.3 * q
    k = a[:, None, None] * (u + 0.3 * k) / 4
    inputs = (*(t.to(device=device, dtype=dtype) for t in (q, k, v)), None, None)
    _check_against_reference(c, dtype, device, gen, seed, boxes=boxes, inputs=inputs)


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("shape, kernel, stride, causal, boxes, mode", ALIGNED_GNA)
def test_gna_stride_aligned_boxes(shape, kernel, stride, causal, boxes, mode, dtype, device):
    from ops.neighborhood.kernels import _dkv_mask_mode, _mask_mode

    pad = (1,) * (3 - len(shape))
    assert _mask_mode(*boxes, pad + kernel, pad + stride, (False,) * len(pad) + causal) == mode
    assert _dkv_mask_mode(boxes[0], pad + stride, (False,) * len(pad) + causal) == 1
    gen, seed = fresh_generator()
    c = dict(shape=shape, kernel=kernel, dilation=(1,) * len(shape), stride=stride, causal=causal,
             batch=1, heads=2, kv_heads=1, dim=16, dim_v=32, extra=5 if mode == 0 else 0)
    _check_against_reference(c, dtype, device, gen, seed, boxes=boxes)


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_public_op_autograd_on_strided_inputs(dtype, device):
    """Packed (non-contiguous) qkv through the registered op: output, lse and autograd grads (16-bit:
    the TMA walks, whose descriptors carry the packed token stride)."""
    gen, seed = fresh_generator()
    shape, win = (6, 7), dict(kernel_size=(3, 4), dilation=(2, 1), stride=(1, 2), is_causal=(False, True))
    qkv = randn(1, *shape, 3, 2, 16, dtype=dtype, device=device, gen=gen, requires_grad=True)
    q, k, v = qkv.unbind(-3)
    out, lse = ops.na2d(q, k, v, **win, return_lse=True)
    w_out = randn(*out.shape, dtype=dtype, device=device, gen=gen)
    w_lse = randn(*lse.shape, dtype=torch.float32, device=device, gen=gen)
    ((out.float() * w_out.float()).sum() + (lse * w_lse).sum()).backward()
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    r_out, r_lse = neighborhood_attention_reference(qd, kd, vd, (3, 4), (2, 1), (1, 2), (False, True), 0.25)
    ((r_out * w_out.double()).sum() + (r_lse * w_lse.double()).sum()).backward()
    assert_close(out, r_out, dtype, "strided output", seed)
    assert_close(lse, r_lse, torch.float32 if dtype == torch.float32 else dtype, "strided lse", seed)
    assert_close(qkv.grad, torch.stack([qd.grad, kd.grad, vd.grad], dim=-3), dtype, "qkv grad", seed)


@pytest.mark.kernel
def test_batch_offsets_past_2_31_elements(device):
    """q, k, v whose last batch item starts past 2**31 elements (batch stride < 2**31): the
    kernels' batch offsets must not wrap. Item 2's output and gradients vs the fp64 reference."""
    gen, seed = fresh_generator()
    shape, win = (6, 7), dict(kernel_size=(3, 3), dilation=(1, 2), stride=(1, 1), is_causal=(False, True))
    q, k, v = (t.detach().requires_grad_() for t in far_batch_views(3, (*shape, 2, 16), torch.float16, device, gen))
    out, lse = ops.na2d(q, k, v, **win, return_lse=True)
    w_out = randn(*out.shape, dtype=torch.float16, device=device, gen=gen)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), w_out)
    for b in (0, 2):
        qd, kd, vd = (t[b:b + 1].detach().double().requires_grad_() for t in (q, k, v))
        r_out, r_lse = neighborhood_attention_reference(qd, kd, vd, (3, 3), (1, 2), (1, 1), (False, True), 0.25)
        r_out.backward(w_out[b:b + 1].double())
        assert_close(out[b:b + 1], r_out, torch.float16, f"output of item {b}", seed)
        assert_close(lse[b:b + 1], r_lse, torch.float16, f"lse of item {b}", seed)
        for name, g, r in (("dq", dq, qd.grad), ("dk", dk, kd.grad), ("dv", dv, vd.grad)):
            assert_close(g[b:b + 1], r, torch.float16, f"{name} of item {b}", seed)


@pytest.mark.kernel
@pytest.mark.skipif(not torch.cuda.is_available(), reason="grid limits are the GPU's (the interpreter has none)")
def test_batch_times_heads_past_65535():
    """More (batch, head) pairs than a CUDA grid's second axis holds (65535): forward and
    gradients of the last items vs the fp64 reference."""
    gen, seed = fresh_generator()
    q, k, v = (randn(33000, 8, 2, 16, dtype=torch.float16, device="cuda", gen=gen, requires_grad=True)
               for _ in range(3))
    out = ops.na1d(q, k, v, kernel_size=3)
    w_out = randn(*out.shape, dtype=torch.float16, device="cuda", gen=gen)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), w_out)
    tail = slice(32900, None)
    qd, kd, vd = (t[tail].detach().double().requires_grad_() for t in (q, k, v))
    ref, _ = neighborhood_attention_reference(qd, kd, vd, (3,), (1,), (1,), (False,), 0.25)
    ref.backward(w_out[tail].double())
    assert_close(out[tail], ref, torch.float16, "output of the last items", seed)
    for name, g, r in (("dq", dq, qd.grad), ("dk", dk, kd.grad), ("dv", dv, vd.grad)):
        assert_close(g[tail], r, torch.float16, f"{name} of the last items", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_flat_grid(monkeypatch, dtype, device):
    """The flat launch grid that batch * heads past 65535 takes (here from 2 on): forward, LSE and
    every gradient (extra KV and GQA included) vs the fp64 reference."""
    import ops.common.tuning as tuning
    import ops.neighborhood.kernels as K

    monkeypatch.setattr(tuning, "GRID_Y_MAX", 1)
    gen, seed = fresh_generator()
    c = dict(shape=(5, 7), kernel=(3, 5), dilation=(1, 1), stride=(1, 2), causal=(False, True), batch=2,
             heads=4, kv_heads=2, dim=16, dim_v=32, extra=3)
    assert len(K._fwd_launch(((2, 5, 7, 4, 16)), 2, 32, (3, 5), (1, 1), (1, 2), (False, True), 3, dtype,
                             0.25, None)[0]) == 1
    _check_against_reference(c, dtype, device, gen, seed)


@pytest.mark.kernel
def test_zero_additional_tokens(device):
    """Additional keys/values with no tokens (e.g. a conditioning that is empty this step) give the
    plain NA result and gradients, on the eager path and the registered op's."""
    from ops.neighborhood.kernels import na_backward, na_forward

    gen, seed = fresh_generator()
    q, k, v = (randn(1, 6, 7, 2, 16, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
               for _ in range(3))
    ek, ev = (torch.empty(1, 0, 2, 16, device=device, requires_grad=True) for _ in range(2))
    w = randn(1, 6, 7, 2, 16, dtype=torch.float32, device=device, gen=gen)
    out = ops.na2d(q, k, v, kernel_size=3, additional_keys=ek, additional_values=ev)
    grads = torch.autograd.grad(out, (q, k, v), w)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, _ = neighborhood_attention_reference(qd, kd, vd, (3, 3), (1, 1), (1, 1), (False, False), 0.25)
    ref.backward(w.double())
    assert_close(out, ref, torch.float32, "output, zero extra tokens", seed)
    for name, g, r in zip(("dq", "dk", "dv"), grads, (qd.grad, kd.grad, vd.grad)):
        assert_close(g, r, torch.float32, f"{name}, zero extra tokens", seed)
    win = ((3, 3), (1, 1), (1, 1), (False, False))
    o2, lse = na_forward(q.detach(), k.detach(), v.detach(), *win, 0.25, ek.detach(), ev.detach())
    assert_close(o2, ref, torch.float32, "registered op's output, zero extra tokens", seed)
    g2 = na_backward(w, None, q.detach(), k.detach(), v.detach(), o2, lse, *win, 0.25, ek.detach(), ev.detach())
    assert [tuple(t.shape) for t in g2[3:]] == [(1, 0, 2, 16)] * 2
    for name, g, r in zip(("dq", "dk", "dv"), g2, (qd.grad, kd.grad, vd.grad)):
        assert_close(g, r, torch.float32, f"registered op's {name}, zero extra tokens", seed)


@pytest.mark.kernel
def test_item_span_past_2_31_is_rejected(device):
    """A batch item whose elements lie 2**31 or more apart cannot be addressed with the kernels'
    32-bit in-item offsets: a clear error naming the tensor, before any launch."""
    from ops.common import check_span

    check_span("query", (2, 2**16, 2**15), (2**32, 2**15, 1))   # spans 2**31 - 1: addressable
    buf = torch.empty(2**31 + 64, dtype=torch.float16, device=device)   # address space, never written
    q = buf.as_strided((1, 5, 4, 1, 16), (0, 2**29, 16, 16, 1))
    with pytest.raises(ValueError, match=r"query \(1, 5, 4, 1, 16\) with strides .* spans 2\*\*31"):
        ops.na2d(q, q, q, kernel_size=3)
    from ops.neighborhood.kernels import na_forward   # the registered op's path (torch.compile)

    with pytest.raises(ValueError, match=r"query \(1, 5, 4, 1, 16\) with strides .* spans 2\*\*31"):
        na_forward(q, q, q, (3, 3), (1, 1), (1, 1), (False, False), 0.25)


@pytest.mark.kernel
@pytest.mark.parametrize("rank", [2, 3])
def test_full_window_equals_dense_attention(rank, device):
    gen, seed = fresh_generator()
    shape = (5, 6) if rank == 2 else (3, 4, 3)
    q, k, v = (randn(1, *shape, 2, 16, dtype=torch.float32, device=device, gen=gen) for _ in range(3))
    out = ops.neighborhood_attention(q, k, v, kernel_size=shape)
    flat = [t.flatten(1, -3).transpose(1, 2).double() for t in (q, k, v)]
    dense = torch.nn.functional.scaled_dot_product_attention(*flat).transpose(1, 2).reshape(out.shape)
    assert_close(out, dense, torch.float32, "kernel = input size", seed)


def test_reference_gradcheck_all_features():
    gen, _ = fresh_generator()
    q = randn(1, 4, 5, 2, 4, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True)
    k, v = (randn(1, 4, 5, 1, 4, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True) for _ in range(2))
    ek, ev = (randn(1, 2, 1, 4, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True) for _ in range(2))

    def f(q, k, v, ek, ev):  # GQA, stride, dilation, a causal axis, extra KV, and the lse output
        return neighborhood_attention_reference(q, k, v, (2, 3), (1, 1), (2, 2), (True, False), 0.3, ek, ev)
    assert torch.autograd.gradcheck(f, (q, k, v, ek, ev))


def test_reference_backward_matches_autograd():
    """The manual backward formulas (used by the op on the reference path) equal autograd."""
    gen, seed = fresh_generator()
    args = ((3, 4), (2, 1), (1, 3), (False, True), 0.3)
    q = randn(1, 7, 6, 2, 8, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True)
    k, v = (randn(1, 7, 6, 2, 8, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True) for _ in range(2))
    out, lse = neighborhood_attention_reference(q, k, v, *args)
    go, gl = torch.randn_like(out), torch.randn_like(lse)
    auto = torch.autograd.grad((out * go).sum() + (lse * gl).sum(), (q, k, v))
    manual = neighborhood_attention_reference_backward(go, gl, q.detach(), k.detach(), v.detach(), *args)
    for a, m in zip(auto, manual):
        assert_close(m, a, torch.float64, "manual backward", seed)


# ---------------------------------------------------------------------------------------------
# argument rules: one test each (they fail before any kernel runs)
# ---------------------------------------------------------------------------------------------
def _qkv2d(shape=(8, 9), heads=2, dim=16, dtype=torch.float32):
    return tuple(torch.randn(1, *shape, heads, dim, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=(9, 3)), r"kernel_size \(9\) must be <= the input length \(8\) on axis 0"),
    (dict(kernel_size=(3, 5), dilation=(1, 2)), r"kernel_size \* dilation \(5 \* 2\) must be <= the input length \(9\) on axis 1"),
    (dict(kernel_size=3, stride=(1, 4)), r"stride \(4\) must be <= kernel_size \(3\) on axis 1"),
    (dict(kernel_size=(0, 3)), r"kernel_size must be >= 1"),
    (dict(kernel_size=3, dilation=(1, 0)), r"dilation must be >= 1"),
    (dict(kernel_size=3, stride=0), r"stride must be >= 1"),
    (dict(kernel_size=(3, 3, 3)), r"kernel_size has 3 entries but the input has 2 spatial"),
    (dict(kernel_size=3, is_causal=(True,)), r"is_causal has 1 entries but the input has 2 spatial"),
    (dict(kernel_size=3, scale=-1.0), r"scale must be a positive finite number"),
    (dict(kernel_size=3, scale=float("nan")), r"scale must be a positive finite number"),
    (dict(kernel_size=3, scale=float("inf")), r"scale must be a positive finite number"),
])
def test_window_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.na2d(*_qkv2d(), **kwargs)


def test_rules_hold_after_a_valid_call_of_the_same_shapes():
    """Eager calls skip the rules for an argument set that passed before; a set that differs only
    in an option's type or value is still checked."""
    q, k, v = _qkv2d()
    ops.na2d(q, k, v, kernel_size=1, stride=1, scale=0.5)   # True == 1: the signature must tell them apart
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of 2 ints, got a bool"):
        ops.na2d(q, k, v, kernel_size=True, stride=1, scale=0.5)
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        ops.na2d(q, k, v, kernel_size=1, stride=1, scale=-0.5)
    with pytest.raises(TypeError, match="one dtype"):
        ops.na2d(q, k, v.half(), kernel_size=1, stride=1, scale=0.5)


def test_wrong_rank():
    q = torch.randn(1, 4, 4, 4, 4, 2, 16)
    with pytest.raises(ValueError, match="query must have 4 or 5 or 6 dimensions"):
        ops.neighborhood_attention(q, q, q, kernel_size=3)
    with pytest.raises(ValueError, match="query must have 3 spatial axes"):
        ops.na3d(*_qkv2d(), kernel_size=3)


def test_qkv_shape_mismatch():
    q, k, v = _qkv2d()
    with pytest.raises(ValueError, match="query and key must share batch, spatial shape and head_dim"):
        ops.na2d(q, k[:, :7], v[:, :7], kernel_size=3)
    with pytest.raises(ValueError, match="key and value must match in all but the last"):
        ops.na2d(q, k, v[:, :, :5], kernel_size=3)
    with pytest.raises(ValueError, match=r"query heads \(2\) must be a multiple of key/value heads \(3\)"):
        k3 = torch.randn(1, 8, 9, 3, 16)
        ops.na2d(q, k3, k3, kernel_size=3)


def test_dtype_mismatch():
    q, k, v = _qkv2d()
    with pytest.raises(TypeError, match=r"one dtype, got query=torch.float32, key=torch.float32, value=torch.float16"):
        ops.na2d(q, k, v.half(), kernel_size=3)
    with pytest.raises(TypeError, match="query must be float16, bfloat16, float32 or float64"):
        ops.na2d(q.int(), k, v, kernel_size=3)


def test_device_mismatch():
    q, k, v = _qkv2d()
    with pytest.raises(ValueError, match=r"one device, got query on cpu, key on cpu, value on meta"):
        ops.na2d(q, k, v.to("meta"), kernel_size=3)


def test_unsupported_head_dim():
    for dim in (20, 264, 0):
        with pytest.raises(ValueError, match="query/key head_dim must be a multiple of 8 from 8 to 256"):
            ops.na2d(*_qkv2d(shape=(3, 3), dim=dim), kernel_size=3)
    q, k, _ = _qkv2d()
    with pytest.raises(ValueError, match="value head_dim must be a multiple of 8"):
        ops.na2d(q, k, torch.randn(1, 8, 9, 2, 12), kernel_size=3)


def test_zero_heads():
    q = torch.randn(1, 8, 9, 0, 16)
    with pytest.raises(ValueError, match="need at least one head, got 0 and 0"):
        ops.na2d(q, q, q, kernel_size=3)
    q, k, v = _qkv2d()
    with pytest.raises(ValueError, match="need at least one head, got 2 and 0"):
        ops.na2d(q, k[..., :0, :], v[..., :0, :], kernel_size=3)


def test_additional_kv_rules():
    q, k, v = _qkv2d()
    ek = torch.randn(1, 4, 2, 16)
    with pytest.raises(ValueError, match="additional_keys and additional_values must be given together"):
        ops.na2d(q, k, v, kernel_size=3, additional_keys=ek)
    with pytest.raises(ValueError, match="additional_keys must be"):
        ops.na2d(q, k, v, kernel_size=3, additional_keys=ek[..., :8], additional_values=ek)
    with pytest.raises(ValueError, match="additional_values must be"):
        ops.na2d(q, k, v, kernel_size=3, additional_keys=ek, additional_values=ek[:, :3])
