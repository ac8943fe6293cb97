"""Probe (session 31): probe74's banded tensor-core depthwise conv, persistent and software-pipelined.

probe74 ran the NCHW 5x5 / 7x7 d3 convs as banded MMAs (one [BM, BK] x [BK, BN] product per kernel
row) at 58-95 us against the channels-last FMA kernel's 27-94 us: one output tile per program, its
KH loads and MMAs a dependent chain through registers and shared memory. Here each program walks
tiles in a grid-stride loop that ``tl.range(num_stages=...)`` pipelines, so the next tiles' input
rows and banded matrices (precomputed, probe74's ``toeplitz``; weights in the input's 16-bit dtype
as cuDNN's 16-bit convs take them) arrive by cp.async while the current tile's MMAs run.

Also: the 1x1 + gate on NCHW maps as a plain GEMM per image (W1 [C, C] @ s [C, pixels], pixels
contiguous), against ``ops.lka.kernels.pw_gate`` on the same strides; then the whole LKA forward.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe75.py
    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe75.py --check
"""
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import ops
from ops.common import interpret_mode
from ops.lka import large_kernel_attention_reference
from lka_case import BENCH, lka_params
from probe74 import toeplitz


@triton.jit
def _dw_tcp_kernel(X, T, Bias, Y, C, H, W: tl.constexpr, n_wt, n_rt, total,
                   KH: tl.constexpr, DIL: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
                   LEFT: tl.constexpr, PW: tl.constexpr, NS: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Same-padded depthwise conv of NCHW x: tiles (plane, BM rows, BN cols) in a grid-stride loop;
    tile = sum over kernel rows i of X[rows shifted by i * DIL, BK cols] @ T[c, i] ([BK, BN] band)."""
    PH: tl.constexpr = DIL * (KH - 1) // 2
    per_plane = n_rt * n_wt
    for tile in tl.range(tl.program_id(0), total, tl.num_programs(0), num_stages=NS):
        plane = tile // per_plane
        rem = tile - plane * per_plane
        h0 = (rem // n_wt) * BM
        w0 = (rem % n_wt) * BN
        c = plane % C
        rows = h0 + tl.arange(0, BM)
        cols = w0 - LEFT + tl.arange(0, BK)
        cmask = (cols >= 0) & (cols < W)
        base = X + plane.to(tl.int64) * H * W
        tb = T + (c * KH).to(tl.int64) * (BK * BN) + tl.arange(0, BK)[:, None] * BN + tl.arange(0, BN)[None, :]
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for i in tl.static_range(KH):
            r = rows - PH + i * DIL
            a = tl.load(base + r[:, None] * W + cols[None, :], mask=((r >= 0) & (r < H))[:, None] & cmask[None, :],
                        other=0.0)
            b = tl.load(tb + i * (BK * BN))
            if UPCAST:   # the interpreter's 16-bit dot is wrong for bf16
                acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(a, b)
        if HAS_BIAS:
            acc += tl.load(Bias + c).to(tl.float32)
        oc = w0 + tl.arange(0, BN)
        tl.store(Y + plane.to(tl.int64) * H * W + rows[:, None] * W + oc[None, :], acc.to(Y.dtype.element_ty),
                 mask=(rows < H)[:, None] & (oc < W)[None, :])


def band_geometry(k, dilation, bn, aligned=True):
    pw = dilation * (k - 1) // 2
    left = -(-pw // 8) * 8 if aligned else pw
    return left, pw, triton.next_power_of_2(bn + left - pw + dilation * (k - 1))


def dw_tcp(x, weight, bias, dilation, bm=64, bn=16, warps=4, stages=3, programs=None, t=None, out=None):
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    assert kh == kw and x.is_contiguous()
    left, pw, bk = band_geometry(kw, dilation, bn)
    if t is None:
        t = toeplitz(weight, x.dtype, dilation, bk, bn, left, False)
    y = torch.empty_like(x) if out is None else out
    n_wt, n_rt = triton.cdiv(w, bn), triton.cdiv(h, bm)
    total = b * c * n_wt * n_rt
    grid = (min(total, programs) if programs else total,)
    _dw_tcp_kernel[grid](x, t, bias if bias is not None else t, y, c, h, w, n_wt, n_rt, total,
                         KH=kh, DIL=dilation, HAS_BIAS=bias is not None,
                         UPCAST=interpret_mode() and x.dtype == torch.bfloat16, LEFT=left, PW=pw, NS=stages,
                         BM=bm, BN=bn, BK=bk, num_warps=warps)
    return y


@triton.jit
def _pw_gate_nchw_kernel(S, W1, B1, X, OUT, C, HW, n_pt,
                         UPCAST: tl.constexpr, BC: tl.constexpr, BP: tl.constexpr):
    """out[b, :, p] = x[b, :, p] * (W1 @ s[b, :, p] + b1) on NCHW maps: W1 [C, C] @ s [C, BP pixels]."""
    b = (tl.program_id(0) // n_pt).to(tl.int64)
    p = (tl.program_id(0) % n_pt) * BP + tl.arange(0, BP)
    ch = tl.arange(0, BC)
    cm = ch < C
    m = cm[:, None] & (p < HW)[None, :]
    off = b * C * HW + ch[:, None] * HW + p[None, :]
    s = tl.load(S + off, mask=m, other=0.0)
    w = tl.load(W1 + ch[:, None] * C + ch[None, :], mask=cm[:, None] & cm[None, :], other=0.0)
    if UPCAST:
        t = tl.dot(w.to(tl.float32), s.to(tl.float32), input_precision="ieee")
    else:
        t = tl.dot(w.to(s.dtype), s)
    t += tl.load(B1 + ch, mask=cm, other=0.0).to(tl.float32)[:, None]
    u = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
    tl.store(OUT + off, (u * t).to(OUT.dtype.element_ty), mask=m)


def pw_gate_nchw(s, w1, b1, x, bp=64, warps=4, out=None):
    b, c, h, w = x.shape
    assert s.is_contiguous() and x.is_contiguous()
    out = torch.empty_like(x) if out is None else out
    n_pt = triton.cdiv(h * w, bp)
    _pw_gate_nchw_kernel[(b * n_pt,)](s, w1.reshape(c, c).contiguous(), b1, x, out, c, h * w, n_pt,
                                      UPCAST=interpret_mode() and x.dtype == torch.bfloat16,
                                      BC=triton.next_power_of_2(c), BP=bp, num_warps=warps)
    return out


def check():
    torch.manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        for k, dil, shape, (bm, bn) in [(5, 1, (2, 3, 19, 37), (16, 16)), (7, 3, (1, 2, 30, 41), (16, 16)),
                                        (3, 1, (1, 4, 9, 20), (32, 16))]:
            x = torch.randn(*shape).to(dtype)
            w = torch.randn(shape[1], 1, k, k) * 0.3
            bias = torch.randn(shape[1])
            ref = F.conv2d(x.double(), w.to(dtype).double(), bias.double(), padding=dil * (k - 1) // 2, dilation=dil,
                           groups=shape[1])
            for programs, stages in ((None, 1), (3, 2), (5, 3)):
                y = torch.full_like(x, float("nan"))
                dw_tcp(x, w, bias, dil, bm, bn, 4, stages, programs, out=y)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                print(f"{dtype} {k}x{k} d{dil} {shape} programs={programs} stages={stages}: rel. error {err:.2e}")
                assert err < 1e-2, err
        x = torch.randn(2, 24, 7, 9).to(dtype)
        s = torch.randn(2, 24, 7, 9).to(dtype)
        w1, b1 = torch.randn(24, 24, 1, 1) * 0.2, torch.randn(24)
        ref = x.double() * F.conv2d(s.double(), w1.to(dtype).double(), b1.double())
        y = pw_gate_nchw(s, w1, b1, x, bp=16)
        print(f"{dtype} pw_gate_nchw: rel. error {((y.double() - ref).norm() / ref.norm()).item():.2e}")


def bench():
    from triton.testing import do_bench
    from ops.lka.kernels import dw_conv, pw_gate
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    torch.manual_seed(0)
    t_ = lambda fn: do_bench(fn, warmup=10, rep=50) * 1e3
    for b, c, s in BENCH:
        x = torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16)
        xcl = x.contiguous(memory_format=torch.channels_last)
        p = lka_params(c)
        ref = large_kernel_attention_reference(x.float(), *p)
        print(f"B{b} C{c} {s}x{s}: copy NCHW->CL {t_(lambda: xcl.copy_(x)):.1f} us", flush=True)
        best = {}
        for name, k, d, wt, bias in (("5x5", 5, 1, p[0], p[1]), ("7x7d3", 7, 3, p[2], p[3])):
            inp = x if k == 5 else dw_tcp(x, p[0], p[1], 1)
            inp_cl = inp.contiguous(memory_format=torch.channels_last)
            t_fma = t_(lambda: dw_conv(inp_cl, wt, bias, d))
            ref_c = F.conv2d(inp.float(), wt.to(torch.bfloat16).float(), bias, padding=d * (k - 1) // 2, dilation=d,
                             groups=c)
            rows = []
            for bm, bn, warps in [(64, 16, 4), (64, 32, 4), (32, 32, 4), (128, 32, 8), (64, 64, 4)]:
                left, pw, bk = band_geometry(k, d, bn)
                tt = toeplitz(wt, x.dtype, d, bk, bn, left, False)
                for mult, stages in [(None, 1), (2, 2), (4, 2), (8, 2), (4, 3), (8, 3), (4, 4)]:
                    progs = mult * sms if mult else None
                    fn = lambda: dw_tcp(inp, wt, bias, d, bm, bn, warps, stages, progs, t=tt)
                    try:
                        y = fn()
                    except Exception as e:
                        rows.append(f"{bm}x{bn} w{warps} x{mult} ns{stages}: {type(e).__name__}")
                        continue
                    err = ((y.float() - ref_c).norm() / ref_c.norm()).item()
                    us = t_(fn)
                    rows.append(f"{bm}x{bn} w{warps} x{mult} ns{stages}: {us:.1f} (err {err:.1e})")
                    if name not in best or us < best[name][0]:
                        best[name] = (us, dict(bm=bm, bn=bn, warps=warps, stages=stages, programs=progs), err)
            print(f"  {name} tensor cores, us: " + "; ".join(rows))
            print(f"  {name}: FMA kernel (channels-last) {t_fma:.1f} us, best tensor-core {best[name][0]:.1f} us "
                  f"{best[name][1]} (err {best[name][2]:.1e})", flush=True)
        sm = dw_tcp(dw_tcp(x, p[0], p[1], 1), p[2], p[3], 3)
        scl = sm.contiguous(memory_format=torch.channels_last)
        pref = x.float() * F.conv2d(sm.float(), p[4].to(torch.bfloat16).float(), p[5])
        rows = [f"ops pw_gate NCHW {t_(lambda: pw_gate(sm, p[4], p[5], x)):.1f}",
                f"ops pw_gate CL {t_(lambda: pw_gate(scl, p[4], p[5], xcl)):.1f}"]
        pbest = None
        for bp, warps in [(32, 4), (64, 4), (128, 4), (64, 8), (128, 8), (256, 8)]:
            try:
                y = pw_gate_nchw(sm, p[4], p[5], x, bp, warps)
            except Exception as e:
                rows.append(f"nchw {bp} w{warps}: {type(e).__name__}")
                continue
            us = t_(lambda: pw_gate_nchw(sm, p[4], p[5], x, bp, warps))
            rows.append(f"nchw {bp} w{warps} {us:.1f} (err {((y.float() - pref).norm() / pref.norm()).item():.1e})")
            if pbest is None or us < pbest[0]:
                pbest = (us, bp, warps)
        print("  1x1 + gate, us: " + "; ".join(rows), flush=True)
        c5, c7 = best["5x5"][1], best["7x7d3"][1]
        w5 = toeplitz(p[0], x.dtype, 1, band_geometry(5, 1, c5["bn"])[2], c5["bn"], band_geometry(5, 1, c5["bn"])[0], False)
        w7 = toeplitz(p[2], x.dtype, 3, band_geometry(7, 3, c7["bn"])[2], c7["bn"], band_geometry(7, 3, c7["bn"])[0], False)

        def lka_nchw(xn):
            a = dw_tcp(xn, p[0], p[1], 1, t=w5, **c5)
            return pw_gate_nchw(dw_tcp(a, p[2], p[3], 3, t=w7, **c7), p[4], p[5], xn, pbest[1], pbest[2])

        def lka_cl_mixed():   # one copy in; the strided 1x1 + gate writes channels-last
            xn = xcl.contiguous()
            a = dw_tcp(xn, p[0], p[1], 1, t=w5, **c5)
            return pw_gate(dw_tcp(a, p[2], p[3], 3, t=w7, **c7), p[4], p[5], xcl, out=torch.empty_like(xcl))

        def lka_cl_copies():  # one copy each way
            return lka_nchw(xcl.contiguous()).contiguous(memory_format=torch.channels_last)

        out = [f"  LKA forward, us: tensor-core NCHW {t_(lambda: lka_nchw(x)):.1f} "
               f"(err {((lka_nchw(x).float() - ref).norm() / ref.norm()).item():.1e})",
               f"CL via a copy in + strided gate {t_(lka_cl_mixed):.1f} "
               f"(err {((lka_cl_mixed().float() - ref).norm() / ref.norm()).item():.1e})",
               f"CL via copies both ways {t_(lka_cl_copies):.1f}",
               f"foveal CL {t_(lambda: ops.large_kernel_attention(xcl, *p)):.1f}",
               f"foveal NCHW {t_(lambda: ops.large_kernel_attention(x, *p)):.1f}"]
        pb = [q.to(torch.bfloat16) for q in p]
        out.append("cuDNN NCHW %.1f" % t_(lambda: x * F.conv2d(F.conv2d(F.conv2d(x, pb[0], pb[1], padding=2, groups=c),
                                                                        pb[2], pb[3], padding=9, dilation=3, groups=c),
                                                               pb[4], pb[5])))
        print("; ".join(out), flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    else:
        bench()
