"""The fused norm-gate mix (ViG's output gate): the Triton kernels against the fp64 reference,
forward and every gradient, and the reference against the unfused formula."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ops
from ops.norm_gate import norm_gate_mix_reference

from .helpers import assert_close, fresh_generator, kernel_dtypes, randn


@pytest.fixture
def poison_allocations(monkeypatch):
    """Every buffer the kernels allocate starts as NaN: an element a kernel forgets to write fails."""
    empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)


def _reference_grads(inputs, dout, eps):
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    out = norm_gate_mix_reference(*leaves, eps)
    return out, torch.autograd.grad(out, leaves, dout.double())


# (leading shape, D): ViG's [B, N, heads, head dim]; rows that are no multiple of the row block and
# more row blocks than programs (the programs' stride loop); a D off the power of two; one row
# a row longer than a row block's 4096 elements
CASES = [((2, 7, 3), 64), ((301,), 48), ((3, 5), 100), ((1,), 32), ((4, 33), 16), ((3,), 5000)]


@pytest.mark.kernel
@pytest.mark.parametrize("lead,D", CASES)
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_kernels_match_reference(device, lead, D, dtype, poison_allocations):
    gen, seed = fresh_generator()
    x, y = (randn(*lead, D, dtype=dtype, device=device, gen=gen, requires_grad=True) for _ in range(2))
    gate = (2 * randn(*lead, D, dtype=torch.float32, device=device, gen=gen)).to(dtype).requires_grad_()
    wx, wy = (1 + randn(D, dtype=torch.float32, device=device, gen=gen) / 4 for _ in range(2))
    wx.requires_grad_()
    wy.requires_grad_()
    eps = 1e-6
    out = ops.norm_gate_mix(x, y, gate, wx, wy, eps)
    assert out.dtype == dtype and out.shape == x.shape
    dout = randn(*lead, D, dtype=dtype, device=device, gen=gen)
    grads = torch.autograd.grad(out, (x, y, gate, wx, wy), dout)
    ref, ref_grads = _reference_grads((x, y, gate, wx, wy), dout, eps)
    assert_close(out, ref, dtype, "out", seed)
    for name, g, r in zip(("dx", "dy", "dgate", "dx_weight", "dy_weight"), grads, ref_grads):
        assert g.dtype == (torch.float32 if name.endswith("weight") else dtype), name
        assert_close(g, r, dtype, name, seed)


@pytest.mark.kernel
def test_strided_inputs(device):
    """Slices of one projection (a row stride wider than D) and a transposed gate (copied) give the
    contiguous inputs' result."""
    gen, seed = fresh_generator()
    B, N, H, D = 2, 9, 2, 32
    xyg = randn(B, N, 3 * H * D, dtype=torch.float32, device=device, gen=gen)
    x, y = (t.unflatten(-1, (H, D)) for t in xyg[..., :2 * H * D].split(H * D, -1))
    gate = randn(B, H, N, D, dtype=torch.float32, device=device, gen=gen).transpose(1, 2)
    wx, wy = (randn(D, dtype=torch.float32, device=device, gen=gen) for _ in range(2))
    out = ops.norm_gate_mix(x, y, gate, wx, wy)
    ref = ops.norm_gate_mix(x.contiguous(), y.contiguous(), gate.contiguous(), wx, wy)
    assert_close(out, ref.double(), torch.float32, "strided", seed)


def test_reference_is_the_unfused_formula_and_gradchecks():
    gen, _ = fresh_generator()
    x, y, gate = (torch.randn(3, 4, 10, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    wx, wy = (torch.randn(10, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    s = torch.sigmoid(gate)

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(norm_gate_mix_reference(x, y, gate, wx, wy, 1e-5), rms(x, wx) * s + rms(y, wy) * (1 - s))
    assert torch.autograd.gradcheck(lambda *a: norm_gate_mix_reference(*a, 1e-5), (x, y, gate, wx, wy))


def test_reference_path_for_float64():
    """float64 (and non-kernel devices) run the reference, gradients included."""
    x, y, gate = (torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    w = torch.ones(8, dtype=torch.float64, requires_grad=True)
    out = ops.norm_gate_mix(x, y, gate, w, w)
    torch.testing.assert_close(out, norm_gate_mix_reference(x, y, gate, w, w))
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (x, y, gate, w))


@pytest.mark.kernel
def test_compiles_fullgraph(device):
    """torch.compile(fullgraph=True) traces the registered ops, forward and backward."""
    gen, _ = fresh_generator()
    x, y, gate = (randn(2, 6, 16, dtype=torch.float32, device=device, gen=gen, requires_grad=True) for _ in range(3))
    wx, wy = (randn(16, dtype=torch.float32, device=device, gen=gen, requires_grad=True) for _ in range(2))

    def fn(*a):
        return F.silu(ops.norm_gate_mix(*a))

    out, expected = torch.compile(fn, fullgraph=True, backend="aot_eager")(x, y, gate, wx, wy), fn(x, y, gate, wx, wy)
    torch.testing.assert_close(out, expected)
    for a, b in zip(torch.autograd.grad(out.sum(), (x, y, gate, wx, wy)),
                    torch.autograd.grad(expected.sum(), (x, y, gate, wx, wy))):
        torch.testing.assert_close(a, b)


@pytest.mark.kernel
def test_empty_rows(device):
    x = torch.randn(0, 3, 8, device=device, requires_grad=True)
    w = torch.ones(8, device=device, requires_grad=True)
    out = ops.norm_gate_mix(x, x, x, w, w)
    assert out.shape == (0, 3, 8)
    gx, gw = torch.autograd.grad(out.sum(), (x, w))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(gw))


@pytest.mark.parametrize("change,match", [
    (dict(y=torch.randn(2, 5, 7)), "y must have x's shape"),
    (dict(gate=torch.randn(2, 8)), "gate must have x's shape"),
    (dict(x_weight=torch.randn(9)), r"x_weight must be \[8\]"),
    (dict(y_weight=torch.randn(8, 1)), r"y_weight must be \[8\]"),
    (dict(gate=torch.randn(2, 5, 8, dtype=torch.float16)), "dtype"),
    (dict(x=torch.randint(0, 3, (2, 5, 8))), "x must be float16, bfloat16, float32 or float64"),
    (dict(eps=0.0), "eps must be a positive float"),
    (dict(eps=-1e-6), "eps must be a positive float"),
    (dict(x_weight=None), "x_weight must be a tensor"),
])
def test_argument_errors(change, match):
    args = dict(x=torch.randn(2, 5, 8), y=torch.randn(2, 5, 8), gate=torch.randn(2, 5, 8), x_weight=torch.ones(8),
                y_weight=torch.ones(8), eps=1e-6)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        ops.norm_gate_mix(**args)


@pytest.mark.kernel
def test_rows_longer_than_the_kernels_hold(device, monkeypatch):
    """Rows longer than MAX_DIM run the reference (no launch), gradients included."""
    import ops.norm_gate as ng
    import ops.norm_gate.kernels as K

    def no_launch(*a, **k):
        raise AssertionError("a kernel ran")
    monkeypatch.setattr(K, "norm_gate_forward", no_launch)
    gen, seed = fresh_generator()
    D = ng.MAX_DIM + 3
    x, y, gate = (randn(2, D, dtype=torch.float32, device=device, gen=gen, requires_grad=True) for _ in range(3))
    w = randn(D, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    out = ops.norm_gate_mix(x, y, gate, w, w)
    grads = torch.autograd.grad(out.sum(), (x, y, gate, w))
    ref, ref_grads = _reference_grads((x, y, gate, w, w), torch.ones_like(out), 1e-6)
    assert_close(out, ref, torch.float32, "out", seed)
    assert_close(grads[3], ref_grads[3] + ref_grads[4], torch.float32, "dw", seed)
