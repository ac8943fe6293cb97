"""Gated linear attention: the Triton kernels against the fp64 recurrence, forward and every gradient."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops
from ops.gla import gated_linear_attention_reference, gla_recurrent_reference

from .helpers import assert_close, fresh_generator, kernel_dtypes, randn

DIRECTIONS = ["causal", "reverse", "bidirectional"]


def _gates(*shape, gen, device, dtype, sharpness=3.0):
    """Log forget gates: logsigmoid of random logits (sharpness 20 gives decays down to e^-60).
    ``sharpness=None``: ViG's gates, logsigmoid(x) / 16 (the kernels' whole-chunk path); sharper
    gates exceed its limit and take the 16-row sub-blocks."""
    logits = torch.randn(*shape, generator=gen)
    g = F.logsigmoid(logits) / 16 if sharpness is None else F.logsigmoid(logits * sharpness)
    return g.to(device=device, dtype=dtype)


def _recurrent(q, k, v, g, rg, scale, direction):
    out = 0
    if direction != "reverse":
        out = out + gla_recurrent_reference(q, k, v, g, scale)
    if direction != "causal":
        out = out + gla_recurrent_reference(q, k, v, g if rg is None else rg, scale, reverse=True)
    return out


@pytest.fixture
def poison_allocations(monkeypatch):
    """Every buffer the kernels allocate starts as NaN: an element a kernel forgets to write fails."""
    empty, new_empty = torch.empty, torch.Tensor.new_empty

    def nan_empty(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def nan_new_empty(self, *args, **kwargs):
        t = new_empty(self, *args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)
    monkeypatch.setattr(torch.Tensor, "new_empty", nan_new_empty)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_reference_is_the_recurrence(direction):
    """The chunked reference (CPU path) equals the token-by-token definition, strong gates included,
    and its gradients pass gradcheck."""
    gen, seed = fresh_generator()
    B, T, H, K, V = 2, 37, 2, 5, 3
    q, k, v = (torch.randn(B, T, H, d, generator=gen, dtype=torch.float64) for d in (K, K, V))
    g, rg = (F.logsigmoid(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64) * 20) for _ in range(2))
    rg = rg if direction == "bidirectional" else None
    out = gated_linear_attention_reference(q, k, v, g, 0.7, direction, rg)
    assert_close(out, _recurrent(q, k, v, g, rg, 0.7, direction), torch.float64, "chunked reference", seed)
    small = [t[:1, :19, :1].clone().requires_grad_() for t in (q, k, v, g)]
    small_rg = rg[:1, :19, :1].clone().requires_grad_() if rg is not None else None
    assert torch.autograd.gradcheck(
        lambda a, b, c, d, e: gated_linear_attention_reference(a, b, c, d, 0.7, direction, e),
        (*small, small_rg))


CASES = [  # B, T, H, K, V: sizes not multiples of the 64-token chunk or the 16-row sub-block
    (2, 70, 2, 16, 16),
    (1, 130, 3, 32, 24),
    (1, 45, 1, 20, 64),
    (2, 3, 2, 8, 8),
]


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("gates", ["vig", "sharp"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernels_against_recurrence(device, poison_allocations, case, gates, direction, dtype):
    """Output and the gradients of q, k, v and both gates, with NaN-filled buffers, vs fp64; ViG's
    mild gates (whole-chunk dots) and sharp ones (16-row sub-blocks with exact decays)."""
    gen, seed = fresh_generator()
    B, T, H, K, V = case
    q, k = (randn(B, T, H, K, dtype=dtype, device=device, gen=gen, requires_grad=True) for _ in range(2))
    v = randn(B, T, H, V, dtype=dtype, device=device, gen=gen, requires_grad=True)
    sharpness = None if gates == "vig" else 3.0
    g = _gates(B, T, H, K, gen=gen, device=device, dtype=dtype, sharpness=sharpness).requires_grad_()
    rg = (_gates(B, T, H, K, gen=gen, device=device, dtype=dtype, sharpness=sharpness).requires_grad_()
          if direction == "bidirectional" else None)
    leaves = [t for t in (q, k, v, g, rg) if t is not None]
    out = ops.gated_linear_attention(q, k, v, g, 0.3, direction, rg)
    assert out.dtype == dtype and out.shape == (B, T, H, V)
    f64 = [t.detach().double().requires_grad_() for t in leaves]
    ref = _recurrent(*f64[:4], f64[4] if rg is not None else None, 0.3, direction)
    assert_close(out, ref, dtype, f"{direction} output", seed)
    grad = randn(B, T, H, V, dtype=dtype, device=device, gen=gen)
    names = ["dq", "dk", "dv", "dgate", "dreverse_gate"]
    for name, a, b in zip(names, torch.autograd.grad(out, leaves, grad),
                          torch.autograd.grad(ref, f64, grad.double())):
        assert a.dtype == dtype
        assert_close(a, b, dtype, f"{direction} {name}", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_strong_forgetting_does_not_overflow(device, direction):
    """Gates down to e^-60 per token after 128 tokens of ViG's mild ones (chunks of both kinds in
    one call): every decay the kernels exponentiate stays in range, nothing overflows into
    inf/NaN (a chunk-wide split of the strong decays would)."""
    gen, seed = fresh_generator()
    B, T, H, K, V = 1, 228, 2, 16, 16
    q, k = (randn(B, T, H, K, dtype=torch.float32, device=device, gen=gen, requires_grad=True) for _ in range(2))
    v = randn(B, T, H, V, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    g = torch.cat([_gates(B, 128, H, K, gen=gen, device=device, dtype=torch.float32, sharpness=None),
                   _gates(B, T - 128, H, K, gen=gen, device=device, dtype=torch.float32, sharpness=20)], 1)
    g.requires_grad_()
    out = ops.gated_linear_attention(q, k, v, g, None, direction)
    f64 = [t.detach().double().requires_grad_() for t in (q, k, v, g)]
    ref = _recurrent(*f64, None, K ** -0.5, direction)
    assert_close(out, ref, torch.float32, "strong gates output", seed)
    for name, a, b in zip(["dq", "dk", "dv", "dg"], torch.autograd.grad(out.sum(), (q, k, v, g)),
                          torch.autograd.grad(ref.sum(), f64)):
        assert_close(a, b, torch.float32, f"strong gates {name}", seed)


@pytest.mark.kernel
def test_strided_projection_slices(device):
    """q, k, v as slices of one projection and both gates as slices of another (ViG's layout) are
    read in place and give the same result and gradients as contiguous copies."""
    gen, seed = fresh_generator()
    B, T, H, K, V = 2, 67, 3, 16, 32
    qkv = randn(B, T, H * (2 * K + V), dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    gk = (torch.randn(B, T, 2 * H * K, generator=gen) * 3).to(device).requires_grad_()
    q, k, v = qkv.split([H * K, H * K, H * V], -1)
    q, k, v = q.unflatten(-1, (H, K)), k.unflatten(-1, (H, K)), v.unflatten(-1, (H, V))
    g, rg = (t.unflatten(-1, (H, K)) for t in F.logsigmoid(gk).chunk(2, -1))
    assert not q.is_contiguous() and not g.is_contiguous()
    out = ops.gated_linear_attention(q, k, v, g, None, "bidirectional", rg)
    ref = ops.gated_linear_attention(*(t.contiguous() for t in (q, k, v, g)), None, "bidirectional", rg.contiguous())
    assert_close(out, ref.double(), torch.float32, "strided vs contiguous", seed)
    for a, b in zip(torch.autograd.grad(out.sum(), (qkv, gk), retain_graph=True),
                    torch.autograd.grad(ref.sum(), (qkv, gk))):
        assert_close(a, b.double(), torch.float32, "strided gradients", seed)


@pytest.mark.kernel
def test_bidirectional_is_causal_plus_reverse(device):
    """On the kernel path: bidirectional = causal + reverse, and reverse = flip(causal(flip))."""
    gen, seed = fresh_generator()
    q, k, v = (randn(1, 90, 2, 16, dtype=torch.float32, device=device, gen=gen) for _ in range(3))
    g, rg = (_gates(1, 90, 2, 16, gen=gen, device=device, dtype=torch.float32) for _ in range(2))
    gla = ops.gated_linear_attention
    both = gla(q, k, v, g, None, "bidirectional", rg)
    rev = gla(q, k, v, rg, None, "reverse")
    assert_close(both, (gla(q, k, v, g) + rev).double(), torch.float32, "bidirectional", seed)
    flipped = gla(q.flip(1), k.flip(1), v.flip(1), rg.flip(1)).flip(1)
    assert_close(rev, flipped.double(), torch.float32, "reverse vs flipped causal", seed)


@pytest.mark.kernel
def test_compiles_fullgraph(device):
    """torch.compile(fullgraph=True) traces the registered ops, forward and backward."""
    gen, _ = fresh_generator()
    q, k, v = (randn(1, 40, 2, 16, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
               for _ in range(3))
    g, rg = (_gates(1, 40, 2, 16, gen=gen, device=device, dtype=torch.float32).requires_grad_() for _ in range(2))

    def fn(q, k, v, g, rg):
        return ops.gated_linear_attention(q, k, v, g, 0.5, "bidirectional", rg)

    out, expected = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, k, v, g, rg), fn(q, k, v, g, rg)
    torch.testing.assert_close(out, expected)
    for a, b in zip(torch.autograd.grad(out.sum(), (q, k, v, g, rg)),
                    torch.autograd.grad(expected.sum(), (q, k, v, g, rg))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(0, 10, 2, 16), (2, 0, 2, 16)], ids=["empty batch", "empty sequence"])
def test_empty_inputs(device, shape):
    """No batch items or no tokens: an empty output and empty gradients, nothing launched."""
    q, k, v = (torch.randn(*shape, device=device, requires_grad=True) for _ in range(3))
    g = F.logsigmoid(torch.randn(*shape, device=device)).requires_grad_()
    out = ops.gated_linear_attention(q, k, v, g, direction="bidirectional")
    assert out.shape == shape
    out.sum().backward()
    assert q.grad.shape == shape and g.grad.shape == shape


def test_bad_arguments():
    q = torch.randn(1, 8, 2, 4)
    v = torch.randn(1, 8, 2, 6)
    g = F.logsigmoid(torch.randn(1, 8, 2, 4))
    gla = ops.gated_linear_attention
    with pytest.raises(ValueError, match="direction must be one of"):
        gla(q, q, v, g, direction="both")
    with pytest.raises(ValueError, match="query must have 4 dimensions"):
        gla(q[0], q, v, g)
    with pytest.raises(ValueError, match="key must have query's shape"):
        gla(q, q[:, :4], v, g)
    with pytest.raises(ValueError, match="value .* must match query's B, T, H"):
        gla(q, q, v[:, :4], g)
    with pytest.raises(ValueError, match="gate must have query's shape"):
        gla(q, q, v, g[..., :2])
    with pytest.raises(ValueError, match="reverse_gate must have query's shape"):
        gla(q, q, v, g, direction="bidirectional", reverse_gate=g[:, :2])
    with pytest.raises(ValueError, match="reverse_gate is only used with direction='bidirectional'"):
        gla(q, q, v, g, reverse_gate=g)
    with pytest.raises(TypeError, match="all inputs must share one dtype"):
        gla(q, q, v.double(), g)
    with pytest.raises(TypeError, match="value must be float16, bfloat16, float32 or float64"):
        gla(q, q, v.long(), g)
    with pytest.raises(ValueError, match=r"head dims must lie in \[1, 128\]"):
        gla(q, q, torch.randn(1, 8, 2, 129), g)
    with pytest.raises(ValueError, match="all inputs must be on one device"):
        gla(q, q, v.to("meta"), g)
    with pytest.raises(TypeError, match="scale must be a float or None"):
        gla(q, q, v, g, scale="0.5")
