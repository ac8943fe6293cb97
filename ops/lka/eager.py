"""The eager kernel path of the LKA chain (``large_kernel_attention``,
``separable_large_kernel_attention``): one resolved program per problem.

VAN's eager training step is bound by its CPU time on the H200 hosts, and one LKA forward+backward
issued ten Triton launches through the generic launch path (a site key built from every argument,
the launch rules recomputed in Python), four casts, a matmul, a reduction and sixteen allocations:
1.2-1.7 ms of CPU per call at VAN's layer shapes (probe53/probe54, session 21), a third of a
VAN-b0 step's. A :class:`ChainProgram` is built once per problem (device, map shape, dtypes,
kernel shapes, dilations) and holds the bound launches of the depthwise convs, of the 1x1 + gate
and of their backward, so a call builds one cache key and goes straight to the compiled kernels.
It also keeps the 1x1 weight cast to the activations' dtype from the forward for the backward, and
takes the conv outputs, the backward's temporaries and the weight-gradient partials from one
allocation each. The launch rules and kernels are ``kernels.py``'s, so both paths share compiled
kernels and give identical results. ``torch.compile`` traces the registered ``foveal::lka_chain_*``
ops, whose implementations run the same programs (without the stacked conv outputs: a registered
op's outputs must not alias). A :class:`ConvProgram` does the same for one depthwise conv
(``depthwise_conv2d``: VAN's MLP 3x3, BEVANet's strips), whose generic launches recompute the
launch rules and build a site key per call.
"""
from __future__ import annotations

import functools
import math

import torch

from ..common import check_span
from ..common.tuning import alignment
from .kernels import (PW_GATE, PW_GATE_BWD, PW_GATE_BWD_DS, PW_PLAIN, _dw_wgrad_reduce, _pw, conv_launch,
                      pw_backward_fused, pw_launch, pw_weight, wgrad_program)

__all__ = ["ChainProgram", "ConvProgram", "conv_program_for", "program_for"]

_ALIGNED = (0,)   # ``alignment`` of tensors that are all 16-byte aligned (fresh allocations are)


def _channels_last_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    _, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def _bind(launcher, name: str, dtypes: tuple, device: int, launch) -> object:
    """A bound launch of ``launcher`` for ``launch`` = (grid, scalars, meta) with tensors of
    ``dtypes``, all 16-byte aligned; its site key holds every value Triton specializes on."""
    grid, scalars, meta = launch
    return launcher.bind((name, device, dtypes, scalars, tuple(meta.items()), _ALIGNED), grid, scalars, meta)


def _bind_conv(dtypes: tuple, device: int, args: tuple) -> object:
    """The bound launch of a depthwise conv (``dw_launch``'s arguments), on the kernel
    ``conv_launch`` picks."""
    launcher, launch = conv_launch(*args)
    return _bind(launcher, "dw", dtypes, device, launch)


class _ConvLaunches:
    """The bound launches of one depthwise conv on a channels-last [B, C, H, W] map: its forward
    (``conv``), the weight gradient's per-split partials and their reduction, and the input
    gradient (the flipped conv, ``flip``; with ``flip_residual`` it adds into its output)."""

    __slots__ = ("conv", "partials", "reduction", "flip", "part_numel")

    def __init__(self, device: int, shape: tuple[int, ...], dtype: torch.dtype, kernel: tuple[int, int],
                 dilation: int, w_dtype: torch.dtype, b_dtype: torch.dtype, has_bias: bool,
                 flip_residual: bool) -> None:
        cl = _channels_last_strides(shape)
        # no residual on the forward: its pointer is the output's
        self.conv = _bind_conv((dtype, w_dtype, b_dtype, dtype, dtype), device,
                               (shape, dtype, kernel, dilation, False, has_bias, False, (cl, cl, cl)))
        launcher, (nsplit, partials, reduction) = wgrad_program(shape, dtype, kernel, dilation, (cl, cl), device)
        self.partials = _bind(launcher, "wgrad", (dtype, dtype, torch.float32), device, partials)
        self.reduction = _bind(_dw_wgrad_reduce, "wgrad_reduce", (torch.float32, w_dtype, b_dtype), device,
                               reduction)
        self.part_numel = nsplit * (kernel[0] * kernel[1] + 1) * shape[1]
        self.flip = _bind_conv((dtype, w_dtype, w_dtype, dtype, dtype), device,
                               (shape, dtype, kernel, dilation, True, False, flip_residual, (cl, cl, cl)))


def _channels_last_map(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    b, c, h, w = shape
    return torch.empty((b, h, w, c), device=device, dtype=dtype).permute(0, 3, 1, 2)


def _grad_like(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An output gradient with x's (channels-last contiguous) strides, 16-byte aligned, as the
    programs' bound backward launches assume: copied when autograd hands over another layout, odd
    strides of size-1 dims or a misaligned view."""
    g = grad.contiguous(memory_format=torch.channels_last)
    if g.stride() != x.stride() or g.data_ptr() & 15:
        g = torch.empty_like(x).copy_(grad)
    return g


class ConvProgram:
    """Forward and backward of one same-padded depthwise conv ``y = dw(x) (+ bias)`` for one
    problem, launches bound. Built for a channels-last contiguous x [B, C, H, W] and a contiguous
    weight with the dtypes it was made for, every tensor 16-byte aligned; outputs and the input
    gradient are allocated channels-last, the weight and bias gradients in their parameters' dtypes
    (the bias gradient is computed with the weight's and dropped when there is no bias)."""

    __slots__ = ("shape", "dtype", "kernel", "w_dtype", "b_dtype", "launches")

    def __init__(self, device: int, shape: tuple[int, ...], dtype: torch.dtype, kernel: tuple[int, int],
                 dilation: int, w_dtype: torch.dtype, b_dtype: torch.dtype | None) -> None:
        check_span("x", shape, _channels_last_strides(shape))   # the kernels' in-item offsets are 32-bit
        self.shape, self.dtype, self.kernel, self.w_dtype = shape, dtype, kernel, w_dtype
        self.b_dtype = w_dtype if b_dtype is None else b_dtype
        self.launches = _ConvLaunches(device, shape, dtype, kernel, dilation, w_dtype, self.b_dtype,
                                      b_dtype is not None, False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = _channels_last_map(self.shape, self.dtype, x.device)
        self.launches.conv(x, weight, weight if bias is None else bias, out, out)
        return out

    def backward(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> tuple:
        """(dx, dweight, dbias); ``grad`` channels-last contiguous and aligned."""
        launches, c = self.launches, self.shape[1]
        dx = _channels_last_map(self.shape, self.dtype, x.device)
        launches.flip(grad, weight, weight, dx, dx)
        part = torch.empty(launches.part_numel, device=x.device, dtype=torch.float32)
        launches.partials(grad, x, part)
        dw = torch.empty((c, 1, *self.kernel), device=x.device, dtype=self.w_dtype)
        db = torch.empty(c, device=x.device, dtype=self.b_dtype)
        launches.reduction(part, dw, db)
        return dx, dw, db


class ChainProgram:
    """Forward and backward of ``x * conv1(dw_n(...dw_1(x)))`` for one problem, launches bound.

    Built for a channels-last contiguous x [B, C, H, W] and contiguous weights with the dtypes it
    was made for; every tensor 16-byte aligned. Conv outputs and the gradients are allocated
    channels-last (weight gradients contiguous), which the bound launches assume; the output too,
    or NCHW contiguous with ``out_nchw`` (NCHW callers: their input is copied channels-last, the
    gate writes the result in their layout, so there is no copy back)."""

    __slots__ = ("shape", "dtype", "n", "kernels", "w1_shape", "w1_dtype", "b1_dtype", "w_dtypes", "b_dtypes",
                 "out_nchw", "stacked", "convs", "gate", "gate_bwd", "gate_ds", "part_offsets", "part_numel")

    def __init__(self, device: int, shape: tuple[int, ...], dtype: torch.dtype,
                 kernels: tuple[tuple[int, int], ...], dilations: tuple[int, ...], w_dtypes: tuple, b_dtypes: tuple,
                 w1_shape: tuple[int, ...], w1_dtype: torch.dtype, b1_dtype: torch.dtype,
                 out_nchw: bool = False) -> None:
        cl = _channels_last_strides(shape)
        check_span("x", shape, cl)   # the kernels' in-item offsets are 32-bit
        self.shape, self.dtype, self.n, self.kernels = shape, dtype, len(kernels), kernels
        self.w1_shape, self.w1_dtype, self.b1_dtype = w1_shape, w1_dtype, b1_dtype
        self.w_dtypes, self.b_dtypes, self.out_nchw = w_dtypes, b_dtypes, out_nchw
        # [n, B, H, W, C] buffers keep each slice 16-byte aligned when one map is a multiple of 16 bytes
        self.stacked = math.prod(shape) * dtype.itemsize % 16 == 0
        # forward: conv i reads a_{i-1} (a_0 = x) and writes a_i. Backward: the gate's (dx, dt, ds),
        # then per conv from the last: its weight gradient (partials, reduction) and its input
        # gradient (the flipped conv); the first conv's joins the gate's in dx (a residual):
        # dx = g * t + dconv^T(dcur)
        self.convs = [_ConvLaunches(device, shape, dtype, k, d, wd, bd, True, i == 0)
                      for i, (k, d, wd, bd) in enumerate(zip(kernels, dilations, w_dtypes, b_dtypes))]
        # the 1x1 kernel's launches: the gate (s, w1, b1, x, -, out, -, -), its backward's dx, dt
        # and, on maps of at most 64 channels, ds (s, w1, b1, x, g, dx, dt, ds); wider, ds = W1^T dt
        # in a second launch (dt, w1, -, -, -, ds, -, -). Unused slots repeat a tensor.
        pw_dtypes = (dtype, dtype, b1_dtype, dtype, dtype, dtype, dtype, dtype)
        out_strides = math.prod(shape[1:]), shape[2] * shape[3], shape[3], 1
        self.gate = _bind(_pw, "pw", pw_dtypes, device,
                          pw_launch(shape, dtype, PW_GATE, (cl, cl, out_strides if out_nchw else cl)))
        fused = pw_backward_fused(shape[1])
        self.gate_bwd = _bind(_pw, "pw", pw_dtypes, device,
                              pw_launch(shape, dtype, PW_GATE_BWD_DS if fused else PW_GATE_BWD, (cl,) * 5))
        self.gate_ds = None if fused else _bind(_pw, "pw", (dtype,) * 8, device,
                                                pw_launch(shape, dtype, PW_PLAIN, (cl,) * 2))
        self.part_offsets, offset = [], 0
        for conv in self.convs:
            self.part_offsets.append((offset, conv.part_numel))
            offset += -(-conv.part_numel // 4) * 4   # 16-byte aligned slices
        self.part_numel = offset

    def _maps(self, device: torch.device, count: int, stacked: bool = True) -> list[torch.Tensor]:
        """``count`` channels-last [B, C, H, W] maps, from one allocation when ``stacked`` and their
        slices stay aligned."""
        b, c, h, w = self.shape
        if stacked and self.stacked:
            return [t.permute(0, 3, 1, 2) for t in torch.empty((count, b, h, w, c), device=device,
                                                                dtype=self.dtype).unbind(0)]
        return [_channels_last_map(self.shape, self.dtype, device) for _ in range(count)]

    def forward(self, x: torch.Tensor, weights, biases, conv1_weight: torch.Tensor, conv1_bias: torch.Tensor,
                stacked: bool = True) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(out, conv outputs a_1..a_n, the 1x1 weight as a [C, C] matrix in x's dtype); the conv
        outputs are views of one allocation when ``stacked`` (not for a registered op's outputs,
        which must not alias)."""
        acts = self._maps(x.device, self.n, stacked)
        a = x
        for conv, w, b, out in zip(self.convs, weights, biases, acts):
            conv.conv(a, w, b, out, out)
            a = out
        w1 = pw_weight(conv1_weight, self.dtype)
        out = torch.empty(self.shape, device=x.device, dtype=self.dtype) if self.out_nchw else torch.empty_like(x)
        self.gate(a, w1, conv1_bias, x, a, out, out, out)
        return out, acts, w1

    def backward(self, grad: torch.Tensor, x: torch.Tensor, weights, acts, w1: torch.Tensor,
                 conv1_bias: torch.Tensor) -> tuple:
        """(dx, [dw_i], [db_i], d conv1_weight, d conv1_bias); ``grad`` channels-last contiguous and aligned."""
        n, c = self.n, self.shape[1]
        dx = torch.empty_like(x)
        dt, *cur = self._maps(x.device, 3 if n > 1 else 2)   # dt, then the conv input gradients, alternating
        s = acts[-1]
        self.gate_bwd(s, w1, conv1_bias, x, grad, dx, dt, cur[0])
        if self.gate_ds is not None:
            self.gate_ds(dt, w1, dt, dt, dt, cur[0], cur[0], cur[0])
        dt2 = dt.permute(0, 2, 3, 1).reshape(-1, c)
        # tensor-core matmul in the input dtype (fp32 accumulation inside), as cuDNN's weight grad does
        dw1 = (dt2.t() @ s.permute(0, 2, 3, 1).reshape(-1, c)).reshape(self.w1_shape)
        db1 = dt2.sum(0, dtype=torch.float32)
        parts = torch.empty(self.part_numel, device=x.device, dtype=torch.float32)
        inputs = [x, *acts[:-1]]
        dws, dbs = [None] * n, [None] * n
        for i in reversed(range(n)):
            dcur = cur[(n - 1 - i) % 2]
            off, numel = self.part_offsets[i]
            part = parts[off:off + numel]
            conv = self.convs[i]
            conv.partials(dcur, inputs[i], part)
            dws[i] = torch.empty((c, 1, *self.kernels[i]), device=x.device, dtype=self.w_dtypes[i])
            dbs[i] = torch.empty(c, device=x.device, dtype=self.b_dtypes[i])
            conv.reduction(part, dws[i], dbs[i])
            into = cur[(n - i) % 2] if i > 0 else dx
            conv.flip(dcur, weights[i], weights[i], into, into)
        return dx, dws, dbs, dw1.to(self.w1_dtype), db1.to(self.b1_dtype)


class _Chain(torch.autograd.Function):
    """The eager kernel path's autograd node: the program's kernels, called directly."""

    @staticmethod
    def forward(ctx, x, program, conv1_weight, conv1_bias, *dw):
        n = program.n
        out, acts, w1 = program.forward(x, dw[:n], dw[n:], conv1_weight, conv1_bias)
        ctx.program = program
        ctx.save_for_backward(x, w1, conv1_bias, *dw[:n], *acts)
        return out

    @staticmethod
    def backward(ctx, grad):
        program = ctx.program
        x, w1, b1, *rest = ctx.saved_tensors
        weights, acts = rest[:program.n], rest[program.n:]
        dx, dws, dbs, dw1, db1 = program.backward(_grad_like(grad, x), x, weights, acts, w1, b1)
        return dx, None, dw1, db1, *dws, *dbs


@functools.lru_cache(maxsize=256)
def _program(*key) -> ChainProgram:
    return ChainProgram(*key)


def program_for(x: torch.Tensor, weights, biases, dilations, conv1_weight: torch.Tensor,
                conv1_bias: torch.Tensor, out_nchw: bool = False) -> ChainProgram | None:
    """The program of this (validated) call, or None when x is not channels-last contiguous, a
    weight is not contiguous or a tensor is not 16-byte aligned (odd views), which the generic
    launches handle. ``out_nchw``: the output is written NCHW contiguous."""
    if x.stride() != _channels_last_strides(x.shape) or alignment(x, conv1_weight, conv1_bias, *weights,
                                                                   *biases) != _ALIGNED:
        return None
    if not (conv1_weight.is_contiguous() and all(w.is_contiguous() for w in weights)
            and all(b.stride(0) == 1 for b in biases) and conv1_bias.stride(0) == 1):
        return None
    return _program(x.get_device(), tuple(x.shape), x.dtype, tuple(tuple(w.shape[-2:]) for w in weights),
                    tuple(dilations), tuple(w.dtype for w in weights), tuple(b.dtype for b in biases),
                    tuple(conv1_weight.shape), conv1_weight.dtype, conv1_bias.dtype, out_nchw)


def chain(program: ChainProgram, x: torch.Tensor, weights, biases, conv1_weight: torch.Tensor,
          conv1_bias: torch.Tensor) -> torch.Tensor:
    """The gated output through ``program``: an autograd node when something needs a gradient."""
    if torch.is_grad_enabled() and (x.requires_grad or conv1_weight.requires_grad or conv1_bias.requires_grad
                                    or any(t.requires_grad for t in weights) or any(t.requires_grad for t in biases)):
        return _Chain.apply(x, program, conv1_weight, conv1_bias, *weights, *biases)
    return program.forward(x, weights, biases, conv1_weight, conv1_bias)[0]


class _Conv(torch.autograd.Function):
    """The eager kernel path's node for one depthwise conv: the program's kernels, called directly."""

    @staticmethod
    def forward(ctx, x, program, weight, bias):
        ctx.program = program
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return program.forward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        dx, dw, db = ctx.program.backward(_grad_like(grad, x), x, weight)
        return dx, None, dw, db if ctx.has_bias else None


@functools.lru_cache(maxsize=256)
def _conv_program(*key) -> ConvProgram:
    return ConvProgram(*key)


def conv_program_for(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     dilation: int) -> ConvProgram | None:
    """The program of this (validated) ``depthwise_conv2d`` call, or None when x is not
    channels-last contiguous, the weight or bias is not contiguous or a tensor is not 16-byte
    aligned, which the generic launches handle."""
    if x.stride() != _channels_last_strides(x.shape) or not weight.is_contiguous() or (
            bias is not None and bias.stride(0) != 1):
        return None
    if alignment(x, weight, *(() if bias is None else (bias,))) != _ALIGNED:
        return None
    return _conv_program(x.get_device(), tuple(x.shape), x.dtype, tuple(weight.shape[-2:]), dilation, weight.dtype,
                         None if bias is None else bias.dtype)


def conv(program: ConvProgram, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The conv's output through ``program``: an autograd node when something needs a gradient."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _Conv.apply(x, program, weight, bias)
    return program.forward(x, weight, bias)
