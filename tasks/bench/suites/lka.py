"""``foveal bench lka``: VAN's large kernel attention, fused Triton kernels vs the cuDNN conv chain.

Peers are ``x * conv1(conv_spatial(conv0(x)))`` with ``F.conv2d`` (cuDNN) on NCHW and on
channels-last inputs; foveal runs on the case's layout. GB/s is on ideal bytes: forward reads
x and writes the output once (2 maps); forward+backward adds reading x and the output gradient
and writing dx (5 maps); weights are negligible. On CUDA every implementation also runs replayed
from a CUDA graph ("... (CUDA graph)" rows): an eager LKA call is often bound by the CPU that
issues it (0.08-0.2 ms forward, ~1 ms forward+backward), the graphs show the GPU work alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import ops

from ..runner import Case, register_suite
from .peers import with_graphs

# (batch, channels, size): VAN stage 1 and 2 at 224, and a segmentation-size stage-1 map.
GPU_CASES = [(64, 64, 56), (64, 128, 28), (16, 64, 128)]
CPU_CASES = [(2, 32, 28)]


def _cudnn(x, w0, b0, ws, bs, w1, b1):
    c = x.shape[1]
    a = F.conv2d(x, w0, b0, padding=2, groups=c)
    a = F.conv2d(a, ws, bs, padding=9, dilation=3, groups=c)
    return x * F.conv2d(a, w1, b1)


def _fwd_bwd(fn, x, params, grad):
    leaves = [x, *params]

    def call():
        return torch.autograd.grad(fn(*leaves), leaves, grad)
    return call


@register_suite("lka")
def lka_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    cases = []
    for batch, c, size in GPU_CASES if device == "cuda" else CPU_CASES:
        gen = torch.Generator(device=device).manual_seed(0)

        def rnd(*shape, scale=1.0):
            return torch.randn(*shape, device=device, dtype=dtype, generator=gen) * scale

        x_nchw = rnd(batch, c, size, size)
        params = [rnd(c, 1, 5, 5, scale=0.2), rnd(c), rnd(c, 1, 7, 7, scale=0.15), rnd(c),
                  rnd(c, c, 1, 1, scale=c ** -0.5), rnd(c)]
        grad_nchw = rnd(batch, c, size, size)
        layouts = {"nchw": (x_nchw, grad_nchw),
                   "channels_last": tuple(t.contiguous(memory_format=torch.channels_last)
                                          for t in (x_nchw, grad_nchw))}
        map_bytes = x_nchw.numel() * x_nchw.element_size()
        fwd_flops = 2.0 * x_nchw.numel() * (25 + 49 + c) + x_nchw.numel()
        shapes = {"x": [batch, c, size, size]}
        for layout, (x, g) in layouts.items():
            # Bind this case's params now: the callables run after every case has been built.
            cudnn = {f"cudnn {name}": (lambda xx=xx, params=params: _cudnn(xx, *params))
                     for name, (xx, _) in layouts.items()}
            cases.append(Case(
                name=f"lka fwd {layout} B{batch} C{c} {size}x{size}", shapes=dict(shapes, layout=layout),
                impls=with_graphs({"foveal": lambda x=x, params=params: ops.large_kernel_attention(x, *params),
                                   **cudnn}, device),
                flops=fwd_flops, bytes=2.0 * map_bytes, items=batch,
                notes={"direction": "forward", "ideal_bytes": "read x + write out"}))
            pg = [p.clone().requires_grad_(True) for p in params]
            xg = {name: xx.clone().requires_grad_(True) for name, (xx, _) in layouts.items()}
            impls = {"foveal": _fwd_bwd(ops.large_kernel_attention, xg[layout], pg, g)}
            impls.update({f"cudnn {name}": _fwd_bwd(_cudnn, xg[name], pg, layouts[name][1]) for name in layouts})
            cases.append(Case(
                name=f"lka fwd+bwd {layout} B{batch} C{c} {size}x{size}", shapes=dict(shapes, layout=layout),
                impls=with_graphs(impls, device), flops=3.0 * fwd_flops, bytes=5.0 * map_bytes, items=batch,
                notes={"direction": "forward+backward", "ideal_bytes": "fwd 2 maps + read x, g, write dx"}))
    return cases
