"""Probe (session 30): depthwise convs of NCHW maps on tensor cores.

In NCHW a channel's rows are contiguous, so a block of output rows x columns of one channel is a
sum over kernel rows i of  X_i [BM rows, BK input columns] @ T_i [BK, BN],  where X_i is the input
block shifted by i * dilation rows and T_i the banded (Toeplitz) matrix of the channel's kernel row
i: T_i[k, n] = w[i, (k - n) / dil] where that is a tap, else 0. The band wastes most of each MMA
(5x5: 5 of 32 rows used per column), but Hopper's tensor cores have >20x the CUDA cores' FMA
rate, so the conv becomes a load/store problem: the FMA kernels run the LKA's 74 taps per element
at ~25% of the FP32 pipes and 8-10% of DRAM bandwidth (README, LKA), which caps the LKA forward
at ~5x cuDNN; BENCHMARKS.md asks for 10x. The channels-last attempt (probe52) lost to the
transposes that channels-last tiles need; NCHW needs none.

The weights enter the MMA in the input's 16-bit dtype; with SPLIT_W their rounding remainder
takes a second MMA (weights good to ~16 bits of mantissa, as the fp32 FMA path's nearly are).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe74.py            # GPU: times
    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe74.py --check
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe74.py --sass   # offline sm_90a SASS counts

Written in session 30 after its device time ran out: not yet run on the GPU.
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


@triton.jit
def _dw_tc_kernel(X, Wt, T, Bias, Y, C, H, W: tl.constexpr, n_wtiles,
                  KH: tl.constexpr, KW: tl.constexpr, DIL: tl.constexpr, HAS_BIAS: tl.constexpr,
                  SPLIT_W: tl.constexpr, UPCAST: tl.constexpr, LEFT: tl.constexpr, PRE_B: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """y[b, c] = same-padded depthwise conv of x[b, c] (NCHW, contiguous planes): one program per
    (plane, BM x BN output tile), one banded MMA per kernel row. The input block starts LEFT >= the
    padding columns left of the tile (a multiple of 8 makes its rows 16-byte aligned: vector loads);
    W is a constexpr so the compiler knows the rows' alignment. With PRE_B the banded matrices come
    from T [C, KH, 1 + SPLIT_W, BK, BN] (built on the host, ``toeplitz``) as dense tiles, instead of
    being gathered from the taps in every program (most of the loads otherwise)."""
    plane = tl.program_id(0).to(tl.int64)
    c = tl.program_id(0) % C
    t = tl.program_id(1)
    h0 = (t // n_wtiles) * BM
    w0 = (t % n_wtiles) * BN
    PH: tl.constexpr = DIL * (KH - 1) // 2
    PW: tl.constexpr = DIL * (KW - 1) // 2
    rows = h0 + tl.arange(0, BM)
    cols = w0 - LEFT + tl.arange(0, BK)
    cmask = (cols >= 0) & (cols < W)
    # input column - output column + PW: the tap index times DIL where the band has a tap
    d = tl.arange(0, BK)[:, None] - tl.arange(0, BN)[None, :] - (LEFT - PW)
    band = (d >= 0) & (d % DIL == 0) & (d < DIL * KW)
    tap = tl.where(band, d // DIL, 0)
    base = X + plane * H * W
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for i in tl.static_range(KH):
        r = rows - PH + i * DIL
        a = tl.load(base + r[:, None] * W + cols[None, :], mask=((r >= 0) & (r < H))[:, None] & cmask[None, :],
                    other=0.0)
        if PRE_B:
            tb = T + (c * KH + i).to(tl.int64) * ((1 + SPLIT_W) * BK * BN) + tl.arange(0, BK)[:, None] * BN \
                + tl.arange(0, BN)[None, :]
            w_hi = tl.load(tb)
            if UPCAST:
                wv = w_hi.to(tl.float32)
                if SPLIT_W:
                    wv += tl.load(tb + BK * BN).to(tl.float32)
                acc += tl.dot(a.to(tl.float32), wv, input_precision="ieee")
            else:
                acc += tl.dot(a, w_hi)
                if SPLIT_W:
                    acc += tl.dot(a, tl.load(tb + BK * BN))
        else:
            wv = tl.load(Wt + c * (KH * KW) + i * KW + tap, mask=band, other=0.0).to(tl.float32)
            if UPCAST:   # the interpreter's 16-bit dot is wrong for bf16: exact fp32 products instead
                acc += tl.dot(a.to(tl.float32), wv, input_precision="ieee")
            else:
                w_hi = wv.to(a.dtype)
                acc += tl.dot(a, w_hi)
                if SPLIT_W:
                    acc += tl.dot(a, (wv - w_hi.to(tl.float32)).to(a.dtype))
    if HAS_BIAS:
        acc += tl.load(Bias + c).to(tl.float32)
    oc = w0 + tl.arange(0, BN)
    tl.store(Y + plane * H * W + rows[:, None] * W + oc[None, :], acc.to(Y.dtype.element_ty),
             mask=(rows < H)[:, None] & (oc < W)[None, :])


def toeplitz(weight, dtype, dilation, bk, bn, left, split):
    """The banded matrices of every channel's kernel rows, [C, KH, 1 + split, BK, BN] in ``dtype``
    (with ``split`` the second holds the rounding remainder of the first)."""
    c, _, kh, kw = weight.shape
    pw = dilation * (kw - 1) // 2
    d = torch.arange(bk, device=weight.device)[:, None] - torch.arange(bn, device=weight.device)[None, :] - (left - pw)
    band = (d >= 0) & (d % dilation == 0) & (d < dilation * kw)
    tap = torch.where(band, d // dilation, 0)
    t = weight.reshape(c, kh, kw).float()[:, :, tap] * band
    hi = t.to(dtype)
    return torch.stack([hi, (t - hi.float()).to(dtype)], 2) if split else hi[:, :, None]


def dw_tc(x, weight, bias, dilation, bm=64, bn=16, bk=None, split=True, warps=4, out=None, aligned=True,
          pre_b=False, t=None):
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    pw = dilation * (kw - 1) // 2
    left = -(-pw // 8) * 8 if aligned else pw
    bk = bk or triton.next_power_of_2(bn + left - pw + dilation * (kw - 1))
    assert bk >= bn + left - pw + dilation * (kw - 1) and x.is_contiguous()
    y = torch.empty_like(x) if out is None else out
    n_wtiles = triton.cdiv(w, bn)
    grid = (b * c, triton.cdiv(h, bm) * n_wtiles)
    if pre_b and t is None:
        t = toeplitz(weight, x.dtype, dilation, bk, bn, left, split)
    _dw_tc_kernel[grid](x, weight.contiguous(), t if pre_b else weight, bias if bias is not None else weight, y, c, h, w,
                        n_wtiles, KH=kh, KW=kw, DIL=dilation, HAS_BIAS=bias is not None, SPLIT_W=split,
                        UPCAST=interpret_mode() and x.dtype == torch.bfloat16, LEFT=left, PRE_B=pre_b,
                        BM=bm, BN=bn, BK=bk,
                        num_warps=warps)
    return y


def lka_tc(x, w0, b0, ws, bs, w1, b1, cfg5, cfg7, split=True):
    """The LKA forward on NCHW x: both convs on tensor cores, then the 1x1 + gate kernel on NCHW strides."""
    from ops.lka.kernels import pw_gate
    a = dw_tc(x, w0, b0, 1, **cfg5, split=split)
    s = dw_tc(a, ws, bs, 3, **cfg7, split=split)
    return pw_gate(s, w1, b1, x)


def check():
    torch.manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        for (kh, kw), dil, shape, cfg in [((5, 5), 1, (2, 3, 19, 37), (16, 16, 32)), ((7, 7), 3, (1, 2, 30, 41), (16, 16, 64)),
                                          ((3, 3), 1, (1, 4, 9, 20), (32, 16, 32)), ((1, 11), 3, (1, 2, 7, 45), (16, 16, 64))]:
            x = torch.randn(*shape).to(dtype)
            w = torch.randn(shape[1], 1, kh, kw) * 0.3
            bias = torch.randn(shape[1])
            ref = F.conv2d(x.double(), w.double(), bias.double(), padding=(dil * (kh - 1) // 2, dil * (kw - 1) // 2),
                           dilation=dil, groups=shape[1])
            for split, aligned, pre_b in ((False, False, False), (True, True, False), (True, False, False),
                                          (True, True, True), (False, True, True)):
                y = dw_tc(x, w, bias, dil, cfg[0], cfg[1], None, split, aligned=aligned, pre_b=pre_b)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                print(f"{dtype} {kh}x{kw} d{dil} {shape} split={split} aligned={aligned} pre_b={pre_b}: "
                      f"rel. error {err:.2e}")
                assert err < 1e-2, err
    x = torch.randn(2, 8, 20, 24).to(torch.float16)
    p = [torch.randn(8, 1, 5, 5) * 0.2, torch.randn(8), torch.randn(8, 1, 7, 7) * 0.1, torch.randn(8),
         torch.randn(8, 8, 1, 1) * 0.3, torch.randn(8)]
    ref = large_kernel_attention_reference(x.double(), *[t.double() for t in p])
    y = lka_tc(x, *p, dict(bm=16, bn=16), dict(bm=16, bn=16))
    print(f"LKA on tensor cores, fp16: rel. error {((y.double() - ref).norm() / ref.norm()).item():.2e}")


def bench():
    from triton.testing import do_bench
    from ops.lka.kernels import dw_conv
    torch.manual_seed(0)
    for b, c, s in BENCH:
        x = torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16)
        xcl = x.contiguous(memory_format=torch.channels_last)
        p = lka_params(c)
        ref = large_kernel_attention_reference(x.float(), *p)
        row = [f"B{b} C{c} {s}x{s}:"]
        for name, k, d, wt, bias in (("5x5", 5, 1, p[0], p[1]), ("7x7d3", 7, 3, p[2], p[3])):
            inp = x if k == 5 else dw_tc(x, p[0], p[1], 1)
            inp_cl = inp.contiguous(memory_format=torch.channels_last)
            t_fma = do_bench(lambda: dw_conv(inp_cl, wt, bias, d), warmup=10, rep=50)
            ref_c = F.conv2d(inp.float(), wt, bias, padding=d * (k - 1) // 2, dilation=d, groups=c)
            best = None
            for bm, bn, warps in [(64, 16, 4), (64, 32, 4), (128, 16, 4), (32, 32, 4), (128, 32, 8)]:
                for split, aligned, pre_b in ((True, True, False), (False, True, False), (True, False, False),
                                              (True, True, True), (False, True, True)):
                    try:
                        pw = d * (k - 1) // 2
                        left = -(-pw // 8) * 8 if aligned else pw
                        bk = triton.next_power_of_2(bn + left - pw + d * (k - 1))
                        tt = toeplitz(wt, inp.dtype, d, bk, bn, left, split) if pre_b else None
                        fn = lambda: dw_tc(inp, wt, bias, d, bm, bn, None, split, warps, aligned=aligned, pre_b=pre_b,
                                           t=tt)
                        y = fn()
                    except Exception as e:
                        print(f"   {name} {bm}x{bn} w{warps} split={split}: {type(e).__name__}")
                        continue
                    err = ((y.float() - ref_c).norm() / ref_c.norm()).item()
                    t = do_bench(fn, warmup=10, rep=50)
                    if best is None or t < best[0]:
                        best = (t, bm, bn, warps, split, aligned, pre_b, err)
                    row.append(f"  {name} tc {bm}x{bn} w{warps} split={split} aligned={aligned} pre_b={pre_b}: "
                               f"{t * 1e3:.1f} us (err {err:.1e})")
            row.append(f"  {name}: FMA kernel (channels-last) {t_fma * 1e3:.1f} us, best tc {best[0] * 1e3:.1f} us "
                       f"({best[1]}x{best[2]} w{best[3]} split={best[4]} aligned={best[5]} pre_b={best[6]}, "
                       f"err {best[7]:.1e})")
        cfg5, cfg7 = dict(bm=64, bn=16, warps=4), dict(bm=64, bn=32, warps=4)
        for split in (True, False):
            y = lka_tc(x, *p, cfg5, cfg7, split=split)
            err = ((y.float() - ref).norm() / ref.norm()).item()
            t = do_bench(lambda: lka_tc(x, *p, cfg5, cfg7, split=split), warmup=10, rep=50)
            row.append(f"  LKA NCHW on tensor cores (split={split}): {t * 1e3:.1f} us (err {err:.1e})")
        from ops.lka.kernels import pw_gate

        def lka_tc_cl():   # channels-last in and out: one copy of x to NCHW, the gate writes channels-last
            xn = xcl.contiguous()
            s = dw_tc(dw_tc(xn, p[0], p[1], 1, **cfg5), p[2], p[3], 3, **cfg7)
            return pw_gate(s, p[4], p[5], xcl, out=torch.empty_like(xcl))
        y = lka_tc_cl()
        t = do_bench(lka_tc_cl, warmup=10, rep=50)
        row.append(f"  LKA channels-last via one NCHW copy and tensor cores: {t * 1e3:.1f} us "
                   f"(err {((y.float() - ref).norm() / ref.norm()).item():.1e})")
        t_cl = do_bench(lambda: ops.large_kernel_attention(xcl, *p), warmup=10, rep=50)
        t_nchw = do_bench(lambda: ops.large_kernel_attention(x, *p), warmup=10, rep=50)
        pb = [t.to(torch.bfloat16) for t in p]
        t_cudnn = do_bench(lambda: x * F.conv2d(F.conv2d(F.conv2d(x, pb[0], pb[1], padding=2, groups=c), pb[2], pb[3],
                                                           padding=9, dilation=3, groups=c), pb[4], pb[5]),
                           warmup=10, rep=50)
        err_cl = ((ops.large_kernel_attention(xcl, *p).float() - ref).norm() / ref.norm()).item()
        row.append(f"  LKA foveal channels-last {t_cl * 1e3:.1f} us (err {err_cl:.1e}), foveal NCHW {t_nchw * 1e3:.1f}, "
                   f"cuDNN NCHW {t_cudnn * 1e3:.1f}")
        print("\n".join(row), flush=True)


def sass():
    """Offline (no GPU): sm_90a SASS instruction counts of the tensor-core kernel at the bench's
    configurations against the row-block FMA kernel at its B64 C64 56x56 rule, per output element.
    Static counts: the tensor-core kernel is unrolled; the FMA kernel's kernel-column loop is
    counted once here and runs KW times."""
    import ops.lka.kernels as L
    from sm90_registers import compile_sm90, sass_counts

    def counts(fn, ptrs, consts, divisible, warps):
        return sass_counts(compile_sm90(fn, {n: ptrs.get(n, "i32") for n in fn.arg_names}, consts, divisible, warps,
                                        stem="/tmp/_probe74")[1])

    def show(label, cnt, outputs, warps):
        loads = sum(v for k, v in cnt.items() if k.startswith("LD"))
        mma = sum(v for k, v in cnt.items() if "MMA" in k)
        print(f"{label}: {sum(cnt.values())} instructions, {mma} MMA, {loads} loads, {cnt.get('FFMA', 0)} FFMA; "
              f"{sum(cnt.values()) * warps / outputs:.2f} warp-instructions per output element")

    ptrs = {n: "*bf16" for n in ("X", "T", "Y")}
    ptrs.update(Wt="*fp32", Bias="*fp32")
    for kh, dil, bm, bn, warps in [(5, 1, 64, 16, 4), (7, 3, 64, 32, 4)]:
        pw = dil * (kh - 1) // 2
        left = -(-pw // 8) * 8
        bk = triton.next_power_of_2(bn + left - pw + dil * (kh - 1))
        for split in (False, True):
            for pre_b in (False, True):
                cnt = counts(_dw_tc_kernel, ptrs, dict(W=56, KH=kh, KW=kh, DIL=dil, HAS_BIAS=True, SPLIT_W=split,
                                                       UPCAST=False, LEFT=left, PRE_B=pre_b, BM=bm, BN=bn, BK=bk),
                             {"C"}, warps)
                show(f"tensor cores {kh}x{kh} d{dil} {bm}x{bn} (BK {bk}) split={split} pre_b={pre_b}", cnt, bm * bn, warps)
    ptrs = {n: "*bf16" for n in ("X", "R", "Y")}
    ptrs.update(Wt="*fp32", Bias="*fp32")
    for kh, dil in [(5, 1), (7, 3)]:
        _, _, meta = L.dw_launch((64, 64, 56, 56), torch.bfloat16, (kh, kh), dil, False, True, False,
                                 ((56 * 56 * 64, 1, 56 * 64, 64),) * 3)
        warps = meta.pop("num_warps")
        cnt = counts(L._dw_rows_kernel, ptrs, dict(sxc=1, src=1, syc=1, **meta),
                     {"C", "sxb", "sxh", "sxw", "srb", "srh", "srw", "syb", "syh", "syw"}, warps)
        show(f"FMA row blocks {kh}x{kh} d{dil} R{meta['ROWS']} [{meta['BLOCK_W']}, {meta['BLOCK_C']}] "
             f"(column loop counted once, runs {kh}x)", cnt, meta["ROWS"] * meta["BLOCK_W"] * meta["BLOCK_C"], warps)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    elif "--sass" in sys.argv:
        sass()
    else:
        bench()
