"""Probe (session 20): depthwise convs on tensor cores, as banded (Toeplitz) matmuls per channel.

LKA's convs run as fp32 FMAs on CUDA cores (74 per element, ~70% of the SMs' issue rate on the
lka bench's case 1, probe-lka-ncu-s10), which caps the fused op near 5x cuDNN. For one channel
and one kernel row kh, the output rows of a tile are a matmul: out[r, t] += sum_kk A[r, kk] B[kk, t]
with A[r, kk] = x[h0 + r + DIL*kh - PH, input column kk] and B[kk, t] = w[kh, kk - t] (zero off
the band). A dilated conv, taken per column phase (output columns ``phase + DIL * (t0 + t)``), is
a dense KW-tap band in phase space, so K = TW + KW - 1 either way. Channels are the batch of a
3-D ``tl.dot`` ([C, TH, K] x [C, K, TW]); K = 16 serves 8 output columns of a 5x5 or of a 7x7 at
dilation 3 (31% and 44% of the tensor-core MACs useful), so the MACs cost little and the kernel
should be bound by its loads.

This times that kernel (``_dw_dot_kernel``, channels-last 16-bit maps, a few tile configs) against
``ops.lka.kernels.dw_conv`` on the bench's three shapes for the 5x5 and the 7x7 dilation 3, after
checking both against ``F.conv2d`` in fp32.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe52.py [quick]

``quick`` times only the four best tile configs of the full run's 5x5 rows (the full sweep of
34 configs per row compiles for ~6 minutes).
"""
import itertools
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ops.common import interpret_mode
from ops.common.tuning import cdiv, next_power_of_2


@triton.jit
def _dw_dot_kernel(
    X, Wt, Bias, Y,
    sxb, sxc, sxh, sxw,
    syb, syc, syh, syw,
    C, H, W, n_hblocks, n_tblocks,
    KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, HAS_BIAS: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, KP: tl.constexpr, BLOCK_C: tl.constexpr, UPCAST: tl.constexpr,
):
    """y[b, c, h0 + r, phase + DIL*(t0 + t)] for a [BLOCK_C, TH, TW] tile: one 3-D tensor-core dot
    per kernel row, channels as the batch, the kernel row's taps as a banded [KP, TW] matrix."""
    pid0 = tl.program_id(0)
    b = (pid0 // n_hblocks).to(tl.int64)
    h0 = (pid0 % n_hblocks) * TH
    pid1 = tl.program_id(1)
    phase = pid1 // n_tblocks
    t0 = (pid1 % n_tblocks) * TW
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    r = tl.arange(0, TH)
    kk = tl.arange(0, KP)
    t = tl.arange(0, TW)
    PH: tl.constexpr = DIL * ((KH - 1) // 2)
    PWD: tl.constexpr = (KW - 1) // 2
    cols_in = phase + DIL * (t0 - PWD + kk)
    col_ok = (cols_in >= 0) & (cols_in < W) & (kk < TW + KW - 1)
    j = kk[:, None] - t[None, :]
    band = (j >= 0) & (j < KW)
    x_base = X + b * sxb + offs_c[:, None, None] * sxc + cols_in[None, None, :] * sxw
    w_base = Wt + offs_c[:, None, None] * (KH * KW) + j[None, :, :]
    w_mask = c_mask[:, None, None] & band[None, :, :]
    acc = tl.zeros([BLOCK_C, TH, TW], dtype=tl.float32)
    for kh in tl.static_range(KH):
        rows_in = h0 + r + DIL * kh - PH
        row_ok = (rows_in >= 0) & (rows_in < H)
        a = tl.load(x_base + rows_in[None, :, None] * sxh,
                    mask=c_mask[:, None, None] & row_ok[None, :, None] & col_ok[None, None, :], other=0.0)
        bm = tl.load(w_base + kh * KW, mask=w_mask, other=0.0)
        if UPCAST:   # the interpreter's bf16 dot is wrong: fp32, IEEE
            acc = tl.dot(a.to(tl.float32), bm.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, bm.to(a.dtype), acc)
    if HAS_BIAS:
        acc += tl.load(Bias + offs_c, mask=c_mask, other=0.0).to(tl.float32)[:, None, None]
    rows = h0 + r
    cols = phase + DIL * (t0 + t)
    y = Y + b * syb + offs_c[:, None, None] * syc + rows[None, :, None] * syh + cols[None, None, :] * syw
    tl.store(y, acc.to(Y.dtype.element_ty),
             mask=c_mask[:, None, None] & (rows < H)[None, :, None] & (cols < W)[None, None, :])


def dw_dot(x, weight, bias, dilation, th=16, tw=8, block_c=32, warps=4, out=None):
    """Same-padded depthwise conv of x [B, C, H, W] (any strides) through ``_dw_dot_kernel``."""
    bsz, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    weight = weight.contiguous()
    out = torch.empty_like(x) if out is None else out
    kp = max(16, next_power_of_2(tw + kw - 1))
    n_hblocks = cdiv(h, th)
    n_tblocks = cdiv(cdiv(w, dilation), tw)
    _dw_dot_kernel[(bsz * n_hblocks, dilation * n_tblocks, cdiv(c, block_c))](
        x, weight, bias if bias is not None else weight, out, *x.stride(), *out.stride(),
        c, h, w, n_hblocks, n_tblocks,
        KH=kh, KW=kw, DIL=dilation, HAS_BIAS=bias is not None, TH=th, TW=tw, KP=kp, BLOCK_C=block_c,
        UPCAST=interpret_mode() and x.dtype == torch.bfloat16, num_warps=warps)
    return out


def _case(bsz, c, size, k, dil, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(bsz, c, size, size, device=device, dtype=dtype, generator=g).contiguous(
        memory_format=torch.channels_last)
    wt = (torch.randn(c, 1, k, k, device=device, generator=g) / k).to(dtype)
    bias = torch.randn(c, device=device, generator=g).to(dtype)
    ref = F.conv2d(x.float(), wt.float(), bias.float(), padding=dil * (k // 2), dilation=dil, groups=c)
    return x, wt, bias, ref


def check(device="cuda", dtype=torch.bfloat16, shapes=((2, 48, 19), (1, 64, 23))):
    for (bsz, c, size), (k, dil), (th, tw, bc) in itertools.product(
            shapes, ((5, 1), (7, 3)), ((16, 8, 16), (32, 16, 32))):
        x, wt, bias, ref = _case(bsz, c, size, k, dil, dtype, device)
        y = dw_dot(x, wt, bias, dil, th, tw, bc).float()
        err = (y - ref).abs().max().item()
        tol = 2e-2 * ref.abs().max().item()
        assert err <= tol, (bsz, c, size, k, dil, th, tw, bc, err, tol)
    print(f"dw_dot matches F.conv2d ({dtype}, {device})")


def main():
    from lka_case import BENCH, us
    from ops.lka.kernels import dw_conv
    check()
    configs = [(th, tw, bc, wp) for th in (16, 32, 64) for tw in (8, 16) for bc in (16, 32, 64) for wp in (4, 8)
               if th * bc * tw <= 32768]
    if sys.argv[1:] == ["quick"]:
        configs = [(64, 8, 32, 4), (32, 8, 64, 4), (64, 8, 64, 8), (32, 8, 32, 4)]
    for k, dil in ((5, 1), (7, 3)):
        for bsz, c, size in BENCH:
            x, wt, bias, ref = _case(bsz, c, size, k, dil, torch.bfloat16, "cuda")
            out = torch.empty_like(x)
            base = us(lambda: dw_conv(x, wt, bias, dil, out=out))
            err_base = (dw_conv(x, wt, bias, dil).float() - ref).abs().max().item()
            timed = []
            for th, tw, bc, wp in configs:
                try:
                    y = dw_dot(x, wt, bias, dil, th, tw, bc, wp)
                except Exception as e:   # noqa: BLE001  (a config that does not compile: skip it)
                    print(f"  config {(th, tw, bc, wp)} failed: {type(e).__name__}: {str(e)[:120]}")
                    continue
                err = (y.float() - ref).abs().max().item()
                timed.append((us(lambda: dw_dot(x, wt, bias, dil, th, tw, bc, wp, out=out)), (th, tw, bc, wp), err))
            timed.sort()
            bytes_ = 2 * x.numel() * x.element_size()
            best = timed[0]
            print(f"{k}x{k} d{dil} B{bsz} C{c} {size}x{size}: row-block kernel {base:6.1f} us (err {err_base:.3f}), "
                  f"dot kernel {best[0]:6.1f} us {best[1]} (err {best[2]:.3f}), {base / best[0]:.2f}x; "
                  f"dot at {bytes_ / best[0] / 1e3:.0f} GB/s; next: "
                  + ", ".join(f"{t:.1f} {cfg}" for t, cfg, _ in timed[1:4]), flush=True)


if __name__ == "__main__":
    main()
