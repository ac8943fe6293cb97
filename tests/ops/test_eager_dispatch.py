"""Eager calls skip the custom-op dispatcher (``eager_autograd``, the LKA chain's flat Function,
NA's, BRA's and the LKA chain's lean Functions on the kernel path);
they must give exactly what the registered custom ops give, forward and every gradient, and must
not be taken while torch.compile traces."""
from __future__ import annotations

import pytest
import torch

import ops
import ops.lka as lka
import ops.neighborhood as na
import ops.routing as bra

from .helpers import fresh_generator, randn


def _grads(fn, leaves, grad):
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = fn(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad)]


def _sliced_grads(fn, base, offset, width, grad):
    """(out, d base) of ``fn(q, k, v)`` on three last-dim slices of one leaf, starting at ``offset``:
    strided (and, for an odd offset, misaligned) views, like the slices of a qkv projection."""
    base = base.detach().clone().requires_grad_(True)
    out = fn(*(base[..., offset + width * i:offset + width * (i + 1)] for i in range(3)))
    return [out.detach(), *torch.autograd.grad(out, base, grad)]


def _same(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.kernel
def test_na_eager_path_equals_the_custom_op(device):
    gen, _ = fresh_generator()
    q, k, v, g = (randn(1, 6, 7, 2, 16, dtype=torch.float32, device=device, gen=gen) for _ in range(4))
    args = ([3, 3], [1, 1], [1, 2], [False, True], 0.25, None, None)
    registered = _grads(lambda a, b, c: na._na_forward(a, b, c, *args)[0], [q, k, v], g)
    generic = _grads(lambda a, b, c: na._na_call(a, b, c, *args)[0], [q, k, v], g)
    # the public call: on the kernel path, the lean Function (_NeighborhoodAttention)
    public = _grads(lambda a, b, c: ops.na2d(a, b, c, kernel_size=3, stride=(1, 2), is_causal=(False, True),
                                             scale=0.25), [q, k, v], g)
    _same(generic, registered)
    _same(public, registered)


@pytest.mark.kernel
def test_na_program_equals_the_custom_op(device):
    """The eager program (``ops/neighborhood/eager.py``) on channel slices of one qkv leaf:
    strided views get a program, misaligned ones (offset 1: 4 bytes off) do not and take the
    registered op; a strided output gradient is copied first. All give exactly what the
    registered op gives."""
    from ops.neighborhood.checks import check_na_args
    from ops.neighborhood.eager import program_for

    gen, _ = fresh_generator()
    qkv = randn(2, 5, 6, 2, 49, dtype=torch.float32, device=device, gen=gen)
    grads = (randn(2, 5, 6, 2, 16, dtype=torch.float32, device=device, gen=gen),
             randn(2, 5, 6, 2, 32, dtype=torch.float32, device=device, gen=gen)[..., ::2])
    args = ([3, 5], [1, 1], [2, 1], [False, True], 0.25, None, None)
    for offset in (0, 1):
        q, k, v = (qkv[..., offset + 16 * i:offset + 16 * (i + 1)] for i in range(3))
        p = check_na_args(q, k, v, (3, 5), 1, (2, 1), (False, True), 0.25, None, None)
        assert (program_for(q, k, v, None, None, p) is None) == bool(offset)
        for g in grads:
            public = _sliced_grads(lambda a, b, c: ops.na2d(a, b, c, kernel_size=(3, 5), stride=(2, 1),
                                                            is_causal=(False, True), scale=0.25), qkv, offset, 16, g)
            registered = _sliced_grads(lambda a, b, c: na._na_forward(a, b, c, *args)[0], qkv, offset, 16, g)
            _same(public, registered)


@pytest.mark.kernel
@pytest.mark.parametrize("kv_heads, dv", [(2, 16), (1, 32)], ids=["mha", "gqa-dv32"])
def test_na_lean_path_extra_kv_and_lse_gradients(device, kv_heads, dv):
    """The eager program with additional keys/values, grouped-query heads and a wider value head
    dim, and a gradient through the LSE only, and both."""
    from ops.neighborhood.checks import check_na_args
    from ops.neighborhood.eager import program_for

    gen, _ = fresh_generator()
    q = randn(1, 9, 2, 16, dtype=torch.float32, device=device, gen=gen)
    k = randn(1, 9, kv_heads, 16, dtype=torch.float32, device=device, gen=gen)
    v = randn(1, 9, kv_heads, dv, dtype=torch.float32, device=device, gen=gen)
    g = randn(1, 9, 2, dv, dtype=torch.float32, device=device, gen=gen)
    ek = randn(1, 3, kv_heads, 16, dtype=torch.float32, device=device, gen=gen)
    ev = randn(1, 3, kv_heads, dv, dtype=torch.float32, device=device, gen=gen)
    gl = randn(1, 9, 2, dtype=torch.float32, device=device, gen=gen)
    args = ([5], [1], [1], [False], 0.3, ek, ev)
    assert program_for(q, k, v, ek, ev, check_na_args(q, k, v, 5, 1, 1, False, 0.3, ek, ev)) is not None
    # without the output, its gradient reaches the backward as None; lse.sum() gives an expanded
    # (stride 0) LSE gradient
    for use_out, weighted in ((True, True), (False, True), (True, False)):
        def loss(op_out, lse):
            return ((op_out * g).sum() if use_out else 0) + ((lse * gl).sum() if weighted else lse.sum())
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v, ek, ev)]
        out, lse = ops.na1d(*leaves[:3], kernel_size=5, scale=0.3, additional_keys=leaves[3],
                            additional_values=leaves[4], return_lse=True)
        public = torch.autograd.grad(loss(out, lse), leaves)
        leaves2 = [t.detach().clone().requires_grad_(True) for t in (q, k, v, ek, ev)]
        out2, lse2 = na._na_forward(*leaves2[:3], *args[:5], leaves2[3], leaves2[4])
        registered = torch.autograd.grad(loss(out2, lse2), leaves2)
        _same([out.detach(), lse.detach(), *public], [out2.detach(), lse2.detach(), *registered])


@pytest.mark.kernel
def test_na_program_backward_with_odd_gradient_strides(device, monkeypatch):
    """Output and LSE gradients whose size-1 batch dim has an odd stride stay odd after
    ``contiguous()``; the program then hands the backward to ``na_backward``, which must give what
    the registered op gives."""
    import ops.neighborhood.eager as eager
    from ops.neighborhood.eager import _laid_out

    handed = []
    generic = eager.na_backward
    monkeypatch.setattr(eager, "na_backward", lambda *a, **kw: handed.append(1) or generic(*a, **kw))

    gen, _ = fresh_generator()
    q, k, v, g = (randn(1, 5, 6, 2, 16, dtype=torch.float32, device=device, gen=gen) for _ in range(4))
    gl = randn(1, 5, 6, 2, dtype=torch.float32, device=device, gen=gen)
    g_odd = g.as_strided(g.shape, (7, *g.stride()[1:]))
    gl_odd = gl.as_strided(gl.shape, (7, *gl.stride()[1:]))
    assert _laid_out(g_odd, g.stride()) is None and _laid_out(gl_odd, gl.stride()) is None
    results = []
    for fn in (lambda a, b, c: ops.na2d(a, b, c, kernel_size=3, scale=0.25, return_lse=True),
               lambda a, b, c: na._na_forward(a, b, c, [3, 3], [1, 1], [1, 1], [False, False], 0.25, None, None)):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        out, lse = fn(*leaves)
        results.append([out.detach(), *torch.autograd.grad([out, lse], leaves, [g_odd, gl_odd])])
    assert handed == [1]   # the public call's backward, not the registered op's
    _same(*results)


@pytest.mark.kernel
def test_bra_eager_path_equals_the_custom_op(device):
    gen, _ = fresh_generator()
    q, k, v, g = (randn(1, 8, 8, 32, dtype=torch.float32, device=device, gen=gen) for _ in range(4))
    idx = torch.randint(0, 4, (1, 4, 2), generator=gen).to(device)
    registered = _grads(lambda a, b, c: bra._bra_forward(a, b, c, idx, [2, 2], 1, 0.3)[0], [q, k, v], g)
    generic = _grads(lambda a, b, c: bra._bra_call(a, b, c, idx, [2, 2], 1, 0.3)[0], [q, k, v], g)
    # the public call: on the kernel path, the eager program's Function (_RoutedAttention); on a
    # GPU its first call compiles through typed views, the second passes raw addresses
    def public(a, b, c):
        return ops.routing_attention(a, b, c, 2, 2, scale=0.3, num_heads=1, routing_indices=idx)
    _same(generic, registered)
    for _ in range(2):
        _same(_grads(public, [q, k, v], g), registered)
    # given int32 indices are used in place and saved for the backward: changing them in place
    # first is an error
    idx32 = idx.to(torch.int32)
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = ops.routing_attention(*leaves, 2, 2, scale=0.3, num_heads=1, routing_indices=idx32)
    idx32.add_(0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward(g)


@pytest.mark.kernel
@pytest.mark.parametrize("regions, means_in_out", [(2, True), (8, False)], ids=["16-token-regions", "1-token"])
def test_bra_program_equals_the_custom_ops(device, regions, means_in_out):
    """The eager program (``ops/routing/eager.py``): kernel routing and attention with a
    contiguous and a strided output gradient (which it copies first); misaligned q/k/v get no
    program and take the registered ops. All give exactly what the registered ops give. The
    region means live in the output's memory, or (one-token regions: too small) in the buffer."""
    from ops.routing.eager import program_for

    gen, _ = fresh_generator()
    qkv = randn(1, 8, 8, 97, dtype=torch.float32, device=device, gen=gen)
    grads = (randn(1, 8, 8, 32, dtype=torch.float32, device=device, gen=gen),
             randn(1, 8, 8, 64, dtype=torch.float32, device=device, gen=gen)[..., ::2])
    rr = [regions, regions]
    for offset in (0, 1):   # channel slices of one qkv tensor; offset 1 is 4 bytes off alignment
        q, k, v = (qkv[..., offset + 32 * i:offset + 32 * (i + 1)] for i in range(3))
        program = program_for(q, k, v, (regions, regions), 2, 1, 0.3)
        assert (program is None) == bool(offset)
        assert offset or program.means_in_out == means_in_out
        ref_idx = bra._bra_route(q, k, rr, 2, 0.3)
        _, idx = ops.routing_attention(q, k, v, regions, 2, scale=0.3, num_heads=1, return_indices=True)
        assert torch.equal(idx, ref_idx.long())
        for g in grads:
            public = _sliced_grads(lambda a, b, c: ops.routing_attention(a, b, c, regions, 2, scale=0.3, num_heads=1),
                                   qkv, offset, 32, g)
            registered = _sliced_grads(lambda a, b, c: bra._bra_forward(a, b, c, ref_idx, rr, 1, 0.3)[0],
                                       qkv, offset, 32, g)
            _same(public, registered)
        if not offset and device.startswith("cuda"):
            # the later calls took the compiled launches' raw-address path (the first, typed views)
            assert all(launch.direct is not None for launch in (program.mean, program.rank, program.fwd,
                                                                program.dq, program.dkv))


@pytest.mark.kernel
def test_lka_eager_path_equals_the_custom_op(device):
    gen, _ = fresh_generator()
    C = 8
    x, g = (randn(1, C, 9, 9, dtype=torch.float32, device=device, gen=gen) for _ in range(2))
    w = [randn(C, 1, 5, 5, dtype=torch.float32, device=device, gen=gen) * 0.2,
         randn(C, 1, 7, 7, dtype=torch.float32, device=device, gen=gen) * 0.1]
    b = [randn(C, dtype=torch.float32, device=device, gen=gen) for _ in range(2)]
    w1, b1 = randn(C, C, 1, 1, dtype=torch.float32, device=device, gen=gen), randn(C, dtype=torch.float32,
                                                                                  device=device, gen=gen)
    leaves = [x, w1, b1, *w, *b]
    # both return [out, conv outputs...]: the eager path as a tuple, the op as a list
    eager = _grads(lambda x, w1, b1, wa, wb, ba, bb: lka._chain(x, [wa, wb], [ba, bb], [1, 3], w1, b1)[0], leaves, g)
    registered = _grads(lambda x, w1, b1, wa, wb, ba, bb: lka._chain_forward(x, [wa, wb], [ba, bb], [1, 3], w1, b1)[0],
                        leaves, g)
    _same(eager, registered)


@pytest.mark.kernel
@pytest.mark.parametrize("case", ["lka-fp32", "lka-half-x-fp32-weights-nchw", "lska-odd-map", "one-conv"])
def test_lka_program_equals_the_custom_op(device, case, monkeypatch):
    """The eager program (``ops/lka/eager.py``, its own autograd node), the registered chain op
    (which runs the same program) and the generic launches (``dw_conv``, ``pw_gate``... with no
    program), forward and every gradient, bit for bit: VAN's LKA in fp32; fp16 x with fp32 weights (autocast's case) given
    NCHW (run channels-last); an LSKA chain of four strip convs on a map whose size is not a
    multiple of 16 bytes (no stacked buffers); a single conv. Output gradients: channels-last, a
    strided one (copied first) and, at batch 1, one whose size-1 batch dim has an odd stride. A
    non-contiguous weight gets no program (the registered op's path)."""
    from ops.lka import lska_kernel_sizes
    from ops.lka.eager import program_for

    gen, _ = fresh_generator()
    dtype = torch.float16 if "half" in case else torch.float32
    b, c, h, w = {"lka-fp32": (2, 16, 9, 11), "lka-half-x-fp32-weights-nchw": (1, 24, 10, 7),
                  "lska-odd-map": (1, 3, 5, 7), "one-conv": (2, 8, 6, 6)}[case]
    chain = {"lska-odd-map": lska_kernel_sizes(23), "one-conv": [((3, 5), 2)]}.get(case, [((5, 5), 1), ((7, 7), 3)])
    kernels, dils = [k for k, _ in chain], [d for _, d in chain]
    n = len(chain)
    fmt = torch.contiguous_format if "nchw" in case else torch.channels_last
    x = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=fmt)
    ws = [randn(c, 1, *k, dtype=torch.float32, device=device, gen=gen) * 0.2 for k in kernels]
    bs = [randn(c, dtype=torch.float32, device=device, gen=gen) for _ in kernels]
    w1 = randn(c, c, 1, 1, dtype=torch.float32, device=device, gen=gen) * c ** -0.5
    b1 = randn(c, dtype=torch.float32, device=device, gen=gen)
    xc = x.contiguous(memory_format=torch.channels_last)
    assert program_for(xc, ws, bs, dils, w1, b1) is not None
    assert program_for(xc, [ws[0].repeat(1, 2, 1, 1)[:, :1], *ws[1:]], bs, dils, w1, b1) is None

    def public(x, w1, b1, *p):
        return ops.separable_large_kernel_attention(x, list(p[:n]), list(p[n:]), dils, w1, b1)

    def registered(x, w1, b1, *p):
        return lka._chain_forward(x.contiguous(memory_format=torch.channels_last), list(p[:n]), list(p[n:]), dils,
                                  w1, b1)[0]
    g = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
    grads = [g, g.contiguous()] + ([g.as_strided(g.shape, (7, *g.stride()[1:]))] if b == 1 else [])
    leaves = [x, w1, b1, *ws, *bs]
    results = [[_grads(public, leaves, grad), _grads(registered, leaves, grad)] for grad in grads]
    import ops.lka.eager as eager
    monkeypatch.setattr(eager, "program_for", lambda *args: None)
    for grad, (eager_path, op_path) in zip(grads, results):
        generic = _grads(registered, leaves, grad)
        _same(eager_path, op_path)
        _same(eager_path, generic)


@pytest.mark.kernel
@pytest.mark.parametrize("case", ["fp32-bias", "half-x-fp32-weights", "no-bias-dilated"])
def test_depthwise_program_equals_the_generic_launches(device, case, monkeypatch):
    """``depthwise_conv2d``'s eager program (``ConvProgram``, its own autograd node) against the
    registered op's generic launches, forward and every gradient, bit for bit: fp32 with a bias,
    fp16 x with fp32 parameters (autocast's case), no bias with dilation 2. Output gradients:
    channels-last, NCHW (copied first) and, at batch 1, one whose size-1 batch dim has an odd stride.
    NCHW x and non-contiguous weights get no program."""
    from ops.lka.eager import conv_program_for

    gen, _ = fresh_generator()
    dtype = torch.float16 if "half" in case else torch.float32
    b, c, h, w = {"fp32-bias": (2, 16, 9, 11), "half-x-fp32-weights": (1, 24, 10, 7), "no-bias-dilated": (1, 8, 7, 6)}[case]
    kernel, dilation = ((3, 5), 2) if "dilated" in case else ((3, 3), 1)
    x = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
    weight = randn(c, 1, *kernel, dtype=torch.float32, device=device, gen=gen) * 0.3
    bias = None if "no-bias" in case else randn(c, dtype=torch.float32, device=device, gen=gen)
    assert conv_program_for(x, weight, bias, dilation) is not None
    assert conv_program_for(x.contiguous(), weight, bias, dilation) is None
    assert conv_program_for(x, weight.repeat(1, 2, 1, 1)[:, :1], bias, dilation) is None
    leaves = [x, weight] + ([] if bias is None else [bias])

    def public(x, weight, *bias):
        return ops.depthwise_conv2d(x, weight, bias[0] if bias else None, dilation=dilation)

    g = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
    grads = [g, g.contiguous()] + ([g.as_strided(g.shape, (7, *g.stride()[1:]))] if b == 1 else [])
    with torch.no_grad():
        inference = public(x, weight, *leaves[2:])
    results = [_grads(public, leaves, grad) for grad in grads]
    import ops.lka.eager as eager
    monkeypatch.setattr(eager, "conv_program_for", lambda *args: None)
    for grad, program_path in zip(grads, results):
        generic = _grads(public, leaves, grad)
        _same(program_path, generic)
        assert program_path[0].is_contiguous(memory_format=torch.channels_last)
        assert program_path[1].is_contiguous(memory_format=torch.channels_last)
        assert [t.dtype for t in program_path[2:]] == [torch.float32] * len(program_path[2:])
    assert torch.equal(inference, results[0][0])


def test_compile_traces_the_registered_op(monkeypatch):
    """Under torch.compile the eager Function must not be used (it would break the graph)."""
    gen, _ = fresh_generator()
    q, k, v = (randn(1, 5, 5, 2, 16, dtype=torch.float32, device="cpu", gen=gen) for _ in range(3))
    expected = ops.na2d(q, k, v, kernel_size=3)

    def forbidden(*args):
        raise AssertionError("eager path taken while compiling")
    monkeypatch.setattr(na, "_na_call", na.eager_autograd(na._na_forward, forbidden, na._setup_context,
                                                         na._backward))
    compiled = torch.compile(lambda a, b, c: ops.na2d(a, b, c, kernel_size=3), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), expected)


def test_op_or_impl_sends_tensor_subclasses_to_the_op():
    """AOTAutograd traces a compiled backward with fake tensors, where is_compiling() may be False:
    those must reach the registered op (whose fake implementation never reads data)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ops.common import op_or_impl
    calls = []
    call = op_or_impl(lambda *a: calls.append("op"), lambda *a: calls.append("impl"))
    call(torch.zeros(2), 1)
    call(torch.nn.Parameter(torch.zeros(2)), 1)
    with FakeTensorMode():
        fake = torch.zeros(2)
    call(fake, 1)
    assert calls == ["impl", "impl", "op"]


def test_compiled_backward_traces_the_registered_op():
    """fullgraph compile of NA forward and backward: gradients equal the eager ones."""
    gen, _ = fresh_generator()
    q, k, v = (randn(1, 5, 6, 2, 16, dtype=torch.float32, device="cpu", gen=gen, requires_grad=True)
               for _ in range(3))
    compiled = torch.compile(lambda a, b, c: ops.na2d(a, b, c, kernel_size=3), fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v)
    expected = ops.na2d(q, k, v, kernel_size=3)
    torch.testing.assert_close(out, expected)
    for g, e in zip(torch.autograd.grad(out.square().sum(), (q, k, v)),
                    torch.autograd.grad(expected.square().sum(), (q, k, v))):
        torch.testing.assert_close(g, e)


def test_eager_call_skips_autograd_only_when_nothing_needs_a_gradient():
    """Inference (grad mode off, or no input requiring a gradient, tensor lists included) runs the
    impl without the autograd Function; anything that needs a gradient still gets one."""
    from ops.common import eager_autograd
    calls = []

    def impl(x, ws):
        calls.append("impl")
        return x * ws[0]

    def setup(ctx, inputs, output):
        calls.append("setup")   # only the Function path saves tensors for a backward
        ctx.save_for_backward(*inputs[1])

    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * w, [None]

    call = eager_autograd(None, impl, setup, backward)
    x, w = torch.ones(3), torch.full((3,), 2.0)
    assert call(x, [w]).grad_fn is None
    with torch.no_grad():
        assert call(x.requires_grad_(True), [w]).grad_fn is None
    assert calls == ["impl", "impl"]
    out = call(x, [w])   # x requires a gradient: through the Function
    assert out.grad_fn is not None
    out.sum().backward()
    assert torch.equal(x.grad, w)
    x = torch.ones(3)
    assert call(x, [w.requires_grad_(True)]).grad_fn is not None   # a tensor in a list requires one
    assert calls == ["impl", "impl"] + ["impl", "setup"] * 2
