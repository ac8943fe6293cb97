"""Large kernel attention (VAN) and its separable, dilated family (LSKA / BEVANet), NCHW maps.

- ``large_kernel_attention(x, conv0_weight, conv0_bias, spatial_weight, spatial_bias,
  conv1_weight, conv1_bias)``: VAN's LKA, ``x * conv1(dw7x7_d3(dw5x5(x)))``.
- ``separable_large_kernel_attention(x, dw_weights, dw_biases, dilations, conv1_weight,
  conv1_bias)``: any chain of same-padded depthwise convs (e.g. LSKA's 1x5, 5x1, 1xK' d3,
  K'x1 d3 with K' = 7 for kernel 23, 11 for kernel 35), then the 1x1 and the gate.
- ``depthwise_conv2d(x, weight, bias=None, dilation=1)``: one same-padded depthwise conv
  (BEVANet's SDLSKA branches: dw5x5, 1xK' and K'x1 with dilation 3).

All take [B, C, H, W] in any memory format (channels-last included); the result keeps x's
format. CUDA tensors (or CPU under ``TRITON_INTERPRET=1``) run the Triton kernels in
``kernels.py`` for forward and backward (eager calls through one bound program per problem,
``eager.py``); float64 and other devices run ``reference.py``.
Weights in another float dtype (e.g. fp32 parameters under bf16 autocast) are cast to x's dtype.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..common import check_span, eager_autograd, op_name, op_or_impl, use_kernels
from .checks import check_depthwise, check_input, check_pointwise, valid_chain
from .reference import (depthwise_conv2d_reference, large_kernel_attention_reference, lka_chain_reference,
                        lka_chain_reference_with_intermediates)

__all__ = ["depthwise_conv2d", "depthwise_conv2d_reference", "large_kernel_attention",
           "large_kernel_attention_reference", "lka_chain_reference", "separable_large_kernel_attention",
           "lska_kernel_sizes"]


# ----------------------------------------------------------------------- chain: dw... -> 1x1 -> gate

_EAGER = None


def _eager():
    """``eager.py``, imported on first use (it imports Triton, which CPU-only installs may lack) and
    then kept: an import statement per call costs CPU time, which VAN's eager step is bound by."""
    global _EAGER
    if _EAGER is None:
        from . import eager
        _EAGER = eager
    return _EAGER


def _chain_forward_impl(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                        dilations: list[int], conv1_weight: torch.Tensor,
                        conv1_bias: torch.Tensor) -> list[torch.Tensor]:
    """[out, a_1, ..., a_n]: the gated output and every depthwise conv's output (a_n feeds the 1x1).
    The backward reads the intermediates instead of recomputing the convs; without autograd they
    are dropped with the call (they are written either way)."""
    if not use_kernels(x):
        return lka_chain_reference_with_intermediates(x, weights, biases, dilations, conv1_weight, conv1_bias)
    program = _eager().program_for(x, weights, biases, dilations, conv1_weight, conv1_bias)
    if program is not None:   # the problem's bound launches; the outputs may not alias, so no stacked maps
        out, acts, _ = program.forward(x, weights, biases, conv1_weight, conv1_bias, stacked=False)
        return [out, *acts]
    check_span("x", x.shape, x.stride())   # the kernels' in-item offsets are 32-bit
    from .kernels import dw_conv, pw_gate
    acts, a = [], x
    for w, b, d in zip(weights, biases, dilations):
        a = dw_conv(a, w, b, d, out=torch.empty_like(x, memory_format=torch.channels_last))
        acts.append(a)
    return [pw_gate(a, conv1_weight, conv1_bias, x), *acts]


_chain_forward = torch.library.custom_op(op_name("lka_chain_forward"), _chain_forward_impl, mutates_args=())


@_chain_forward.register_fake
def _(x, weights, biases, dilations, conv1_weight, conv1_bias):
    return [torch.empty_like(x) for _ in range(len(weights) + 1)]


def _chain_backward_impl(grad: torch.Tensor, x: torch.Tensor, acts: list[torch.Tensor], weights: list[torch.Tensor],
                         biases: list[torch.Tensor], dilations: list[int], conv1_weight: torch.Tensor,
                         conv1_bias: torch.Tensor) -> list[torch.Tensor]:
    """Returns [dx, dw_1..dw_n, db_1..db_n, dconv1_weight, dconv1_bias]; ``acts`` are the forward's
    conv outputs (channels-last, so the 1x1 weight gradient is one matmul)."""
    # Only reached on the kernel path: the public functions call the reference directly otherwise.
    program = _eager().program_for(x, weights, biases, dilations, conv1_weight, conv1_bias)
    if program is not None and all(t.stride() == x.stride() and not t.data_ptr() & 15 for t in (grad, *acts)):
        from .kernels import pw_weight
        dx, dws, dbs, dw1, db1 = program.backward(grad, x, weights, acts, pw_weight(conv1_weight, x.dtype),
                                                  conv1_bias)
        return [dx, *dws, *dbs, dw1, db1]
    from .kernels import dw_conv, dw_conv_weight_grad, pw_gate_backward
    s = acts[-1]
    inputs = [x, *acts[:-1]]
    dx, dt, dcur = pw_gate_backward(s, conv1_weight, conv1_bias, x, grad)
    c = x.shape[1]
    dt2 = dt.permute(0, 2, 3, 1).reshape(-1, c)
    # tensor-core matmul in the input dtype (fp32 accumulation inside), as cuDNN's weight grad does
    dw1 = (dt2.t() @ s.permute(0, 2, 3, 1).reshape(-1, c)).reshape(conv1_weight.shape)
    db1 = dt2.sum(0, dtype=torch.float32)
    dws, dbs = [], []
    for i in reversed(range(len(weights))):
        w, d = weights[i], dilations[i]
        dw, db = dw_conv_weight_grad(dcur, inputs[i], tuple(w.shape[-2:]), d, w.dtype, biases[i].dtype)
        dws.append(dw)
        dbs.append(db)
        if i > 0:
            dcur = dw_conv(dcur, w, None, d, flip=True,
                           out=torch.empty_like(x, memory_format=torch.channels_last))
        else:  # the conv path's input gradient joins the gate's: dx = g * t + dconv^T(dcur)
            dx = dw_conv(dcur, w, None, d, flip=True, residual=dx, out=dx)
    return [dx, *reversed(dws), *reversed(dbs), dw1.to(conv1_weight.dtype), db1.to(conv1_bias.dtype)]


_chain_backward = torch.library.custom_op(op_name("lka_chain_backward"), _chain_backward_impl, mutates_args=())
_chain_backward_call = op_or_impl(_chain_backward, _chain_backward_impl)


@_chain_backward.register_fake
def _(grad, x, acts, weights, biases, dilations, conv1_weight, conv1_bias):
    return [torch.empty_like(t) for t in (x, *weights, *biases, conv1_weight, conv1_bias)]


def _chain_setup(ctx, inputs, output):
    x, weights, biases, dilations, conv1_weight, conv1_bias = inputs
    ctx.n = len(weights)
    ctx.dilations = dilations
    ctx.save_for_backward(x, *weights, *biases, conv1_weight, conv1_bias, *output[1:])


def _chain_bwd(ctx, grads):
    grad = grads[0].contiguous(memory_format=torch.channels_last)
    saved = ctx.saved_tensors
    n = ctx.n
    x, weights, biases = saved[0], list(saved[1:1 + n]), list(saved[1 + n:1 + 2 * n])
    w1, b1, acts = saved[1 + 2 * n], saved[2 + 2 * n], list(saved[3 + 2 * n:])
    g = _chain_backward_call(grad, x, acts, weights, biases, ctx.dilations, w1, b1)
    return g[0], list(g[1:1 + n]), list(g[1 + n:1 + 2 * n]), None, g[-2], g[-1]


_chain_forward.register_autograd(_chain_bwd, setup_context=_chain_setup)


_chain = eager_autograd(_chain_forward, _chain_forward_impl, _chain_setup, _chain_bwd)


def _check_chain(x, dw_weights, dw_biases, dilations, conv1_weight, conv1_bias) -> None:
    """Every rule of a chain call, one at a time, raising the first that fails."""
    check_input(x)
    if not (len(dw_weights) == len(dw_biases) == len(dilations)) or len(dw_weights) == 0:
        raise ValueError("dw_weights, dw_biases and dilations must be non-empty and of equal length, got "
                         f"{len(dw_weights)}, {len(dw_biases)}, {len(dilations)}")
    for i, (w, b, d) in enumerate(zip(dw_weights, dw_biases, dilations)):
        if b is None:
            raise ValueError(f"dw_biases[{i}] must be a tensor [C]; pass zeros for a bias-free conv")
        check_depthwise(x, w, b, d, f"dw[{i}]")
    check_pointwise(x, conv1_weight, conv1_bias)


def separable_large_kernel_attention(
    x: torch.Tensor,
    dw_weights: Sequence[torch.Tensor],
    dw_biases: Sequence[torch.Tensor],
    dilations: Sequence[int],
    conv1_weight: torch.Tensor,
    conv1_bias: torch.Tensor,
) -> torch.Tensor:
    """``x * conv1(dw_n(...dw_1(x)))`` with same-padded depthwise convs of any odd kernel shape.

    Args:
        x: [B, C, H, W].
        dw_weights: depthwise kernels [C, 1, kh_i, kw_i] (odd sizes), applied in order.
        dw_biases: [C] each. dilations: one int per conv.
        conv1_weight: [C, C, 1, 1]. conv1_bias: [C].
    Returns:
        [B, C, H, W], same memory format as x.
    """
    if not valid_chain(x, dw_weights, dw_biases, dilations, conv1_weight, conv1_bias):
        _check_chain(x, dw_weights, dw_biases, dilations, conv1_weight, conv1_bias)
    dt = x.dtype
    if not use_kernels(x) or x.shape[0] == 0:  # plain autograd through the reference (float64, CPU, other
        # devices, and empty batches: their weight gradients are zeros, which no kernel launch writes)
        return lka_chain_reference(x, [w.to(dt) for w in dw_weights], [b.to(dt) for b in dw_biases],
                                   list(dilations), conv1_weight.to(dt), conv1_bias.to(dt))
    # The depthwise kernels tile [columns, channels] strips with channels innermost: NCHW input is
    # run channels-last (one copy in, ~4x cheaper on the H200 than reading NCHW through strides);
    # the eager program's gate writes the output NCHW (no copy back, probe77).
    nchw = not x.is_contiguous(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last) if nchw else x
    # Weights go in as they are (fp32 parameters under autocast): the kernels convert them on load,
    # so there are no cast launches here, and the weight gradients come back in the weights' dtype.
    dilations = [int(d) for d in dilations]
    program = None if torch.compiler.is_compiling() else _eager().program_for(xc, dw_weights, dw_biases, dilations,
                                                                              conv1_weight, conv1_bias, nchw)
    if program is not None:   # eager: the problem's bound launches (eager.py), the output in x's layout
        return _eager().chain(program, xc, dw_weights, dw_biases, conv1_weight, conv1_bias)
    out = _chain(xc, list(dw_weights), list(dw_biases), dilations, conv1_weight, conv1_bias)[0]
    return out.contiguous() if nchw else out


def large_kernel_attention(
    x: torch.Tensor,
    conv0_weight: torch.Tensor,
    conv0_bias: torch.Tensor,
    spatial_weight: torch.Tensor,
    spatial_bias: torch.Tensor,
    conv1_weight: torch.Tensor,
    conv1_bias: torch.Tensor,
) -> torch.Tensor:
    """VAN's large kernel attention: ``x * conv1(conv_spatial(conv0(x)))``.

    Args:
        x: [B, C, H, W] (NCHW or channels-last).
        conv0_weight: [C, 1, 5, 5] (depthwise, pad 2). conv0_bias: [C].
        spatial_weight: [C, 1, 7, 7] (depthwise, dilation 3, pad 9). spatial_bias: [C].
        conv1_weight: [C, C, 1, 1]. conv1_bias: [C].
    Returns:
        [B, C, H, W], same memory format as x.
    """
    if not (isinstance(conv0_weight, torch.Tensor) and isinstance(spatial_weight, torch.Tensor)
            and conv0_weight.shape[-2:] == (5, 5) and spatial_weight.shape[-2:] == (7, 7)):
        check_input(x)
        for name, w, k in (("conv0_weight", conv0_weight, 5), ("spatial_weight", spatial_weight, 7)):
            if isinstance(w, torch.Tensor) and tuple(w.shape[-2:]) != (k, k):
                raise ValueError(f"{name} must be a {k}x{k} depthwise kernel [C, 1, {k}, {k}], "
                                 f"got {tuple(w.shape)}")
    return separable_large_kernel_attention(x, [conv0_weight, spatial_weight], [conv0_bias, spatial_bias],
                                            [1, 3], conv1_weight, conv1_bias)


def lska_kernel_sizes(kernel: int) -> list[tuple[tuple[int, int], int]]:
    """LSKA's decomposition of a ``kernel x kernel`` receptive field (kernel 23 or 35): the
    ``((kh, kw), dilation)`` of its four strip convs: 1xk0, k0x1, then 1xK' and K'x1 with dilation 3."""
    table = {23: (5, 7), 35: (5, 11)}
    if kernel not in table:
        raise ValueError(f"kernel must be one of {sorted(table)} (the LSKA sizes), got {kernel}")
    k0, k1 = table[kernel]
    return [((1, k0), 1), ((k0, 1), 1), ((1, k1), 3), ((k1, 1), 3)]


# ----------------------------------------------------------------------- single depthwise conv

def _dw_forward_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    if not use_kernels(x):
        return depthwise_conv2d_reference(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype),
                                          dilation)
    check_span("x", x.shape, x.stride())   # the kernels' in-item offsets are 32-bit
    from .kernels import dw_conv
    return dw_conv(x, weight, bias, dilation)


_dw_forward = torch.library.custom_op(op_name("depthwise_conv2d_forward"), _dw_forward_impl, mutates_args=())


@_dw_forward.register_fake
def _(x, weight, bias, dilation):
    return torch.empty_like(x)


def _dw_backward_impl(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias_dtype: torch.dtype,
                      dilation: int) -> list[torch.Tensor]:
    """Returns [dx, dweight, dbias] (dbias in ``bias_dtype``)."""
    check_span("grad", grad.shape, grad.stride())
    from .kernels import dw_conv, dw_conv_weight_grad
    dx = dw_conv(grad, weight, None, dilation, flip=True)
    dw, db = dw_conv_weight_grad(grad, x, tuple(weight.shape[-2:]), dilation, weight.dtype, bias_dtype)
    return [dx, dw, db]


_dw_backward = torch.library.custom_op(op_name("depthwise_conv2d_backward"), _dw_backward_impl, mutates_args=())
_dw_backward_call = op_or_impl(_dw_backward, _dw_backward_impl)


@_dw_backward.register_fake
def _(grad, x, weight, bias_dtype, dilation):
    return [torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[0], dtype=bias_dtype)]


def _dw_setup(ctx, inputs, output):
    x, weight, bias, dilation = inputs
    ctx.dilation = dilation
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(x, weight)


def _dw_bwd(ctx, grad):
    x, weight = ctx.saved_tensors
    bias_dtype = weight.dtype if ctx.bias_dtype is None else ctx.bias_dtype
    dx, dw, db = _dw_backward_call(grad, x, weight, bias_dtype, ctx.dilation)
    return dx, dw, db if ctx.bias_dtype is not None else None, None


_dw_forward.register_autograd(_dw_bwd, setup_context=_dw_setup)
_dw = eager_autograd(_dw_forward, _dw_forward_impl, _dw_setup, _dw_bwd)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     dilation: int = 1) -> torch.Tensor:
    """Same-padded depthwise conv: [B, C, H, W] * [C, 1, kh, kw] (odd) + [C] -> [B, C, H, W].

    Padding is ``dilation * (k - 1) / 2`` per axis, i.e. ``nn.Conv2d(C, C, (kh, kw),
    padding=..., dilation=dilation, groups=C)``; fused Triton forward and backward.
    """
    check_input(x)
    check_depthwise(x, weight, bias, dilation, "")  # names: weight, bias
    if not use_kernels(x) or x.shape[0] == 0:  # plain autograd through the reference (empty batches too)
        return depthwise_conv2d_reference(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype),
                                          dilation)
    # weights in their own dtype (the kernels convert on load; gradients come back in it)
    if not torch.compiler.is_compiling():   # eager channels-last maps: the problem's bound launches (eager.py)
        program = _eager().conv_program_for(x, weight, bias, dilation)
        if program is not None:
            return _eager().conv(program, x, weight, bias)
    return _dw(x, weight, bias, int(dilation))
