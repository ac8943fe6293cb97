"""Offline sm_90 register and spill report of the LKA kernels at their launch configurations (no GPU
needed): Triton compiles each kernel for an H200 target and ``ptxas -v`` (shipped with Triton)
reports registers and spill bytes per thread.

    python benchmarks/probe/sm90_registers.py      # from the repo root, PYTHONPATH=.

Session 3 found the production configurations spilling 0.1-8.5 KB per thread
(``benchmarks/results/probe-lka-sm90-registers-*.txt``).
"""
import os
import subprocess
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import ops.lka.kernels as L

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
DIVISIBLE = {"C", "sxb", "sxh", "sxw", "srb", "srh", "srw", "syb", "syh", "syw", "ssb", "ssh", "ssw", "sob",
             "soh", "sow", "sgb", "sgh", "sgw", "sdxb", "sdxh", "sdxw", "stb", "sth", "stw", "sdsb", "sdsh", "sdsw"}
POINTERS = {"Wt", "Bias", "Wd", "Bd", "W1", "B1", "X", "R", "Y", "A", "OUT", "S", "G", "DX", "DT", "DS", "DY"}


def signature(name: str) -> str:
    if name == "PART":
        return "*fp32"
    return "*bf16" if name in POINTERS else "i32"


def report(label: str, fn, consts: dict, num_warps: int, num_stages: int = 3) -> None:
    names = fn.arg_names
    sig = {n: "constexpr" if n in consts else signature(n) for n in names}
    # pointers, and the strides and channel counts Triton would specialize as multiples of 16 (without
    # them the loads compile scalar, unlike on the GPU)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if sig[n].startswith("*") or n in DIVISIBLE}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()}, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = "/tmp/_sm90_probe.ptx"
    with open(ptx, "w") as f:
        f.write(kernel.asm["ptx"])
    err = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx, "-o", ptx + ".o"],
                         capture_output=True, text=True).stderr
    regs = next(line for line in err.splitlines() if "Used " in line).split("Used ")[1].split(" ")[0]
    spill = next(line for line in err.splitlines() if "spill stores" in line).split(",")[1].split()[0]
    print(f"{label:48s} w{num_warps}: {regs:>4s} registers, {spill:>5s} B spill stores", flush=True)


if __name__ == "__main__":
    # the launch configurations of ops/lka/kernels.py for VAN-b2's stage 1 and 2 maps (C = 64 / 128)
    for c, hw in ((64, 56), (128, 28)):
        for kh, dil, flip, res in [(5, 1, False, False), (7, 3, False, False), (7, 3, True, True)]:
            rows, bw, bc, warps = L._rows_config(c, hw, hw, dil, max_rows=12)
            report(f"dw_rows {kh}x{kh} d{dil} flip={flip} res={res} R{rows} W{bw} C{bc}", L._dw_rows_kernel,
                   dict(sxc=1, src=1, syc=1, KH=kh, KW=kh, DIL=dil, FLIP=flip, HAS_BIAS=not flip, HAS_RES=res,
                        ROWS=rows, BLOCK_W=bw, BLOCK_C=bc), warps)
            rows, bw, bc, warps = L._rows_config(c, hw, hw, dil, max_rows=8)
            report(f"dw_wgrad {kh}x{kh} d{dil} R{rows} W{bw} C{bc}", L._dw_wgrad_kernel,
                   dict(sgc=1, sxc=1, KH=kh, KW=kh, DIL=dil, ROWS=rows, BLOCK_W=bw, BLOCK_C=bc), warps)
        bp, bci, bco, warps = L._pw_config(c, hw * hw)
        report(f"pw_gate P{bp} CI{bci}", L._pw_gate_kernel,
               dict(ssc=1, sxc=1, soc=1, UPCAST=False, PRECISION="tf32", BLOCK_P=bp, BLOCK_CI=bci, BLOCK_CO=bco),
               warps)
        report(f"pw_gate_bwd P{bp} CI{bci}", L._pw_gate_bwd_kernel,
               dict(ssc=1, sxc=1, sgc=1, sdxc=1, stc=1, sdsc=1, UPCAST=False, PRECISION="tf32",
                    BLOCK_P=bp, BLOCK_CI=bci, BLOCK_CO=bco), warps)
    sys.exit(0)
