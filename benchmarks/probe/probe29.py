"""Probe (session 10, CPU): what accumulating the depthwise taps in 16 bits would cost in accuracy.

LKA's convs run as fp32 FMAs on CUDA cores at ~70% of the SMs' compute throughput (Nsight
Compute, session 10); packed 16-bit FMAs (HFMA2, two lanes per instruction) would halve the FMA
instructions, but they round the running sum to bf16 (or fp16) after every tap. This emulates the
kernel's accumulation order (kernel columns outer, kernel rows inner, one FMA per tap, bias last)
for VAN's 5x5 and 7x7-dilation-3 convs with every FMA rounded to fp32 (the kernel now), to bf16
or to fp16 (inputs converted first), and compares each output, rounded to bf16, with the fp64
conv of the same bf16 inputs. Two weight scales: PyTorch's default init for these convs
(uniform +-1/sqrt(k*k)) and 4x that.

    python benchmarks/probe/probe29.py          # the accuracy table
    python benchmarks/probe/probe29.py --sass   # does Triton emit packed HFMA2? (offline sm_90a compile)
"""
import sys

import torch
import torch.nn.functional as F


def conv_emulated(x, w, b, dil, acc_dtype, flush=False):
    """x [C, H, W] (float64 holding bf16 values), w [C, k, k], b [C] -> [C, H, W], accumulated in
    ``acc_dtype`` (each FMA computed exactly, then rounded: a fused multiply-add). ``flush``: the
    taps of each kernel column are summed in ``acc_dtype`` and each column's sum added into an fp32
    total (packed 16-bit FMAs with an fp32 add per column)."""
    c, h, wd = x.shape
    k = w.shape[-1]
    pad = dil * (k - 1) // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    if acc_dtype != torch.float32:   # packed 16-bit math converts its operands first
        xp, w = xp.to(acc_dtype).double(), w.to(acc_dtype).double()
    acc = torch.zeros(c, h, wd, dtype=torch.float64)
    for kw in range(k):
        part = torch.zeros(c, h, wd, dtype=torch.float64)
        for kh in range(k):
            tap = xp[:, kh * dil:kh * dil + h, kw * dil:kw * dil + wd] * w[:, kh, kw, None, None]
            if flush:   # 16-bit sum over this kernel column, added into an fp32 total after it
                part = (part + tap).to(acc_dtype).double()
            else:
                acc = (acc + tap).to(acc_dtype).double()
        if flush:
            acc = (acc + part).float().double()
    if flush:
        return (acc + b[:, None, None]).float().double()
    return (acc + b[:, None, None]).to(acc_dtype).double()


def main():
    torch.manual_seed(0)
    c, s = 16, 28
    print("conv      weights    | max / mean relative error of the bf16 output vs fp64, accumulating in:")
    print("                     |      fp32 (now)            bf16                  fp16                  "
          "bf16 per column         fp16 per column")
    for k, dil in ((5, 1), (7, 3)):
        for scale_name, scale in (("default", 1.0), ("4x", 4.0)):
            x = torch.randn(c, s, s).bfloat16().double()
            bound = scale / k
            w = ((torch.rand(c, k, k) * 2 - 1) * bound).bfloat16().double()
            b = ((torch.rand(c) * 2 - 1) * bound).bfloat16().double()
            ref = F.conv2d(x[None], w[:, None], b, padding=dil * (k - 1) // 2, dilation=dil, groups=c)[0]
            norm = ref.abs().mean()
            cells = []
            for acc, flush in ((torch.float32, False), (torch.bfloat16, False), (torch.float16, False),
                               (torch.bfloat16, True), (torch.float16, True)):
                out = conv_emulated(x, w, b, dil, acc, flush).bfloat16().double()
                err = (out - ref).abs()
                cells.append(f"{(err.max() / norm).item():8.2e} / {(err.mean() / norm).item():8.2e}")
            print(f"{k}x{k} d{dil}  {scale_name:8s}   | " + "   ".join(cells))
    print("(errors relative to the mean |output|; bf16 output rounding alone is ~2e-3 relative; 'per column':"
          " 16-bit sums over each kernel column, added into fp32)")


def sass_packed():
    """SASS opcode counts of a 7-tap toy loop over a [16, 64] tile with an fp32 or fp16 accumulator,
    for bf16 and fp16 inputs, compiled for sm_90a with the ptxas/cuobjdump of Triton's wheel."""
    import triton
    import triton.language as tl

    @triton.jit
    def toy(X, W, Y, sxw, C, ACC16: tl.constexpr):
        offs_w = tl.arange(0, 16)
        offs_c = tl.program_id(0) * 64 + tl.arange(0, 64)
        base = X + offs_w[:, None] * sxw + offs_c[None, :]
        acc = tl.zeros([16, 64], dtype=tl.float16 if ACC16 else tl.float32)
        for kw in range(7):
            for j in tl.static_range(7):
                x = tl.load(base + (kw + j) * 64)
                w = tl.load(W + offs_c * 49 + j * 7 + kw)
                if ACC16:
                    acc = acc + x.to(tl.float16) * w.to(tl.float16)[None, :]
                else:
                    acc = acc + x.to(tl.float32) * w.to(tl.float32)[None, :]
        tl.store(Y + offs_w[:, None] * sxw + offs_c[None, :], acc.to(Y.dtype.element_ty))

    from sm90_registers import compile_sm90, sass_counts
    for dt in ("bf16", "fp16"):
        for acc16 in (False, True):
            sig = {"X": f"*{dt}", "W": f"*{dt}", "Y": f"*{dt}", "sxw": "i32", "C": "i32"}
            ops = sass_counts(compile_sm90(toy, sig, {"ACC16": acc16}, {"sxw", "C"}, 4, stem="/tmp/_probe29")[1])
            print(dt, "acc16" if acc16 else "acc32", sum(ops.values()), dict(ops.most_common(8)))


if __name__ == "__main__":
    sass_packed() if "--sass" in sys.argv else main()
