"""Probe (session 15, no GPU needed): registers, spills and SASS size of the NA kernels for one
bench problem, this tree's ``ops`` against another copy (``ab.py``), compiled offline for sm_90
with the launch's meta-parameters and Triton's integer specialization (== 1 as a constant,
multiples of 16 as divisible). probe39 measured NA-3D video's forward+backward 2.2-2.5% slower
after the flat grid and the int64 batch index; this shows what changed in the compiled code.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe40.py /tmp/base/ops [stages ...] [--wide]

``--wide`` also compiles this tree's kernels with 64-bit batch offsets (``WIDE``).
"""
import importlib
import os
import re
import subprocess
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import ops
from ops.common.tuning import contiguous_strides
from ab import load_base

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
NVDISASM = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
# NA-3D video: q [1, 20, 48, 80, 12, 128], window 7x15x15, bf16
SHAPE, WINDOW = (1, 20, 48, 80, 12, 128), ((7, 15, 15), (1, 1, 1), (1, 1, 1), (False, False, False))


def compile_counts(fn, values: dict, num_warps: int, num_stages: int, maxnreg=None) -> tuple[int, int, int, int]:
    """Compile ``fn`` (a jit function) for sm_90 with ``values`` (every argument by name: tensors
    as dtype strings, ints, floats, constexprs) and an optional register cap: (registers,
    spill-store bytes, SASS instructions, instructions in the main loop, the longest backward
    branch's body; 0 when the compiler unrolled every loop)."""
    names = fn.arg_names
    sig, consts, attrs = {}, {}, {}
    for i, n in enumerate(names):
        v = values[n]
        if i in fn.constexprs:
            sig[n] = "constexpr"
            consts[(i,)] = v
        elif isinstance(v, str):           # a pointer
            sig[n] = v
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            sig[n] = "fp32"
        elif v == 1:                       # Triton specializes == 1 as a constant
            sig[n] = "constexpr"
            consts[(i,)] = 1
        else:
            sig[n] = "i64" if abs(v) >= 2**31 else "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = dict(num_warps=num_warps, num_stages=num_stages, **({"maxnreg": maxnreg} if maxnreg else {}))
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32), options=options)
    ptx = "/tmp/_probe40.ptx"
    with open(ptx, "w") as f:
        f.write(kernel.asm["ptx"])
    cap = ["--maxrregcount", str(maxnreg)] if maxnreg else []
    err = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx, "-o", ptx + ".o", *cap],
                         capture_output=True, text=True).stderr
    regs = int(re.search(r"Used (\d+) registers", err).group(1))
    spill = int(re.search(r"(\d+) bytes spill stores", err).group(1))
    sass = subprocess.run([NVDISASM, "-sass", ptx + ".o"], capture_output=True, text=True).stdout
    ins = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"\n\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)]
    loops = [(int(m.group(1), 16), a) for a, t in ins for m in [re.search(r"BRA\s+0x([0-9a-f]+)", t)]
             if m and int(m.group(1), 16) < a]
    if not loops:
        return regs, spill, len(ins), 0
    lo, hi = max(loops, key=lambda x: x[1] - x[0])
    return regs, spill, len(ins), sum(1 for a, _ in ins if lo <= a <= hi)


def compile_report(label, fn, values: dict, num_warps: int, num_stages: int) -> None:
    """Print registers, spills and SASS instructions of ``fn`` compiled as ``compile_counts`` does."""
    regs, spill, n_sass, _ = compile_counts(fn, values, num_warps, num_stages)
    print(f"{label:28s} w{num_warps} s{num_stages}: {regs:4d} registers, {spill:5d} B spills, "
          f"{n_sass:6d} SASS instructions", flush=True)


def launches(mod):
    """(name, jit fn, argument values) of the NA forward, dQ and dK/dV launches of the problem."""
    K = importlib.import_module(mod.__name__ + ".neighborhood.kernels")
    problem = (SHAPE, SHAPE[-2], SHAPE[-1], *WINDOW, 0, torch.bfloat16)
    s5 = K._s5_of(contiguous_strides(SHAPE), 2)
    sl = K._s5_of(contiguous_strides(SHAPE[:-1]), 1)
    se = (0,) * 6
    out = []
    grid, args, meta = K._fwd_launch(*problem, 128 ** -0.5, None)
    fn = K._na_fwd_kernel.fn
    vals = dict(zip(fn.arg_names, ("*bf16",) * 5 + ("*bf16", "*fp32") + (*s5, *s5, *s5, *se, *s5, *sl) + args))
    out.append(("forward", fn, {**vals, **meta}))
    dq_grid, dq_args, dq_meta, dkv_grid, dkv_args, dkv_meta, _ = K._bwd_launch(*problem, 128 ** -0.5, False, None)
    fn = K._na_bwd_dq_kernel.fn
    ptrs = ("*bf16",) * 7 + ("*fp32",) * 3 + ("*bf16",)
    vals = dict(zip(fn.arg_names, ptrs + (*s5, *s5, *s5, *se, *s5, *s5, *sl, *s5) + dq_args))
    out.append(("dQ", fn, {**vals, **dq_meta}))
    fn = K._na_bwd_dkv_kernel.fn
    # LSE and DELTA (before session 19) or their pairs LD: the float32 pointers
    n_fp32 = 1 if "LD" in fn.arg_names else 2
    ptrs = ("*bf16",) * 4 + ("*fp32",) * n_fp32 + ("*bf16",) * 2
    vals = dict(zip(fn.arg_names, ptrs + (*s5, *s5, *s5, *s5, *sl, *s5, *s5) + dkv_args))
    out.append(("dK/dV", fn, {**vals, **dkv_meta}))
    wide = [dict(WIDE=False)] if "WIDE" in K._na_fwd_kernel.fn.arg_names else [{}]
    if len(sys.argv) > 2 and "--wide" in sys.argv and wide[0]:
        wide.append(dict(WIDE=True))
    return [(f"{name}{' wide' if w.get('WIDE') else ''}", fn, {**vals, **w}) for name, fn, vals in out for w in wide]


def main():
    base = load_base(sys.argv[1])
    stages = [int(a) for a in sys.argv[2:] if a.isdigit()] or [1, 2]
    for label, mod in (("base", base), ("this", ops)):
        for name, fn, vals in launches(mod):
            rows = vals["BN0"] * vals["BN1"] * vals["BN2"] if name.startswith("dK/dV") else \
                vals["BM0"] * vals["BM1"] * vals["BM2"]
            warps = 8 if rows >= 128 else 4
            for s in stages:
                compile_report(f"{label} {name}", fn, vals, warps, s)


if __name__ == "__main__":
    main()
