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
POINTERS = {"Wt", "Bias", "Wd", "Bd", "W1", "B1", "X", "R", "Y", "A", "OUT", "S", "G", "DX", "DT", "DS", "DY"}


def signature(name: str) -> str:
    if name == "PART":
        return "*fp32"
    return "*bf16" if name in POINTERS else "i32"


def report(label: str, fn, consts: dict, num_warps: int, num_stages: int = 3) -> None:
    names = fn.arg_names
    sig = {n: "constexpr" if n in consts else signature(n) for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if sig[n].startswith("*")}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()}, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = "/tmp/_sm90_probe.ptx"
    with open(ptx, "w") as f:
        f.write(kernel.asm["ptx"])
    err = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx, "-o", ptx + ".o"],
                         capture_output=True, text=True).stderr
    regs = next(line for line in err.splitlines() if "registers" in line).split("Used ")[1].split(" ")[0]
    spill = next(line for line in err.splitlines() if "spill stores" in line).split(",")[1].split()[0]
    print(f"{label:48s} w{num_warps}: {regs:>4s} registers, {spill:>5s} B spill stores", flush=True)


if __name__ == "__main__":
    # the launch configurations of ops/lka/kernels.py for the bench shapes (C = 64 and 128)
    block_c = L._channel_block(64)
    block_p = L._pixel_block(block_c, 56 * 56)
    dw_warps = 8 if block_p * block_c <= 2048 else 4
    for kh, dil, flip, res in [(5, 1, False, False), (7, 3, False, False), (7, 3, True, False), (5, 1, True, True)]:
        report(f"dw_conv {kh}x{kh} d{dil} flip={flip} res={res} P{block_p} C{block_c}", L._dw_conv_kernel,
               dict(sxc=1, src=1, syc=1, KH=kh, KW=kh, DIL=dil, FLIP=flip, HAS_BIAS=not flip, HAS_RES=res,
                    BLOCK_P=block_p, BLOCK_C=block_c), dw_warps)
    for c in (64, 128):
        bp, bci, bco, warps = L._pw_config(c, 56 * 56, "fwd")
        report(f"dw_pw_gate 7x7 d3 P{bp} CI{bci} w{warps}", L._dw_pw_gate_kernel,
               dict(sac=1, sxc=1, soc=1, KH=7, KW=7, DIL=3, UPCAST=False, PRECISION="tf32",
                    BLOCK_P=bp, BLOCK_CI=bci, BLOCK_CO=bco), warps)
        bp, bci, bco, warps = L._pw_config(c, 56 * 56, "bwd")
        report(f"pw_gate_bwd P{bp} CI{bci} w{warps}", L._pw_gate_bwd_kernel,
               dict(ssc=1, sxc=1, sgc=1, sdxc=1, stc=1, sdsc=1, UPCAST=False, PRECISION="tf32",
                    BLOCK_P=bp, BLOCK_CI=bci, BLOCK_CO=bco), warps)
    for kh, dil in [(5, 1), (7, 3)]:
        report(f"dw_wgrad {kh}x{kh} P64 C32", L._dw_wgrad_kernel,
               dict(sgc=1, sxc=1, KH=kh, KW=kh, DIL=dil, TAPS_P2=64, BLOCK_P=64, BLOCK_C=32), 4)
    sys.exit(0)
