"""Offline sm_90 register and spill report of the LKA kernels at their launch configurations (no GPU
needed): Triton compiles each kernel for an H200 target and ``ptxas -v`` (shipped with Triton)
reports registers and spill bytes per thread.

    python benchmarks/probe/sm90_registers.py      # from the repo root, PYTHONPATH=.

``compile_sm90`` and ``sass_counts`` serve the other probes that read sm_90 code offline. Put the
GPU machine's Triton first on ``PYTHONPATH`` (e.g. ``pip install --no-deps --target DIR
triton==3.6.0``): register allocation differs between Triton versions, and session 32 found the
GPU's version reproducing a register cliff (the 5x5 conv with unmasked channels: 121 -> 193
registers) that this machine's 3.8 did not show.

Session 3 found the production configurations spilling 0.1-8.5 KB per thread
(``benchmarks/results/probe-lka-sm90-registers-*.txt``).
"""
import collections
import os
import re
import subprocess
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import ops.lka.kernels as L

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
DIVISIBLE = {"C", "HW", "s2b", "s2h", "s2w", "sxb", "sxh", "sxw", "srb", "srh", "srw", "syb", "syh", "syw", "ssb", "ssh", "ssw", "sob",
             "soh", "sow", "sgb", "sgh", "sgw", "sdxb", "sdxh", "sdxw", "stb", "sth", "stw", "sdsb", "sdsh", "sdsw"}
POINTERS = {"Wt", "Bias", "Wd", "Bd", "W1", "B1", "X", "R", "Y", "A", "OUT", "OUT2", "S", "G", "DX", "DT", "DS",
            "DY"}


def signature(name: str) -> str:
    if name == "PART":
        return "*fp32"
    return "*bf16" if name in POINTERS else "i32"


def compile_sm90(fn, signature: dict, constexprs: dict, divisible, num_warps: int, num_stages: int = 3,
                 stem: str = "/tmp/_sm90_probe") -> tuple[str, str]:
    """Compile ``fn`` for the H200 (sm_90a) without a GPU: ``signature`` maps argument names to
    Triton types (the constexprs' names are filled in), pointers and the names in ``divisible`` are
    specialized as multiples of 16 (without that the loads compile scalar, unlike on the GPU).
    Returns (ptxas -v's report, cubin path)."""
    names = fn.arg_names
    sig = {n: "constexpr" if n in constexprs else signature[n] for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if sig[n].startswith("*") or n in divisible}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(n),): v for n, v in constexprs.items()},
                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    with open(stem + ".ptx", "w") as f:
        f.write(kernel.asm["ptx"])
    err = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", stem + ".ptx", "-o", stem + ".cubin"],
                         capture_output=True, text=True, check=True).stderr
    return err, stem + ".cubin"


def sass_text(cubin: str) -> str:
    """A cubin's SASS listing (``cuobjdump -sass``)."""
    return subprocess.run([os.path.join(os.path.dirname(PTXAS), "cuobjdump"), "-sass", cubin], capture_output=True,
                          text=True, check=True).stdout


def opcode_counts(sass: str) -> collections.Counter:
    """Instruction counts by opcode (modifiers dropped) of SASS text."""
    return collections.Counter(re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass))


def sass_counts(cubin: str) -> collections.Counter:
    """Instruction counts by opcode of a cubin's SASS (static: loops count once)."""
    return opcode_counts(sass_text(cubin))


def ptxas_usage(err: str) -> tuple[str, str]:
    """(registers, spill-store bytes) per thread from ``ptxas -v``'s report."""
    regs = next(line for line in err.splitlines() if "Used " in line).split("Used ")[1].split(" ")[0]
    spill = next(line for line in err.splitlines() if "spill stores" in line).split(",")[1].split()[0]
    return regs, spill


def report(label: str, fn, consts: dict, num_warps: int, num_stages: int = 3) -> None:
    err, _ = compile_sm90(fn, {n: signature(n) for n in fn.arg_names}, consts, DIVISIBLE, num_warps, num_stages)
    regs, spill = ptxas_usage(err)
    print(f"{label:48s} w{num_warps}: {regs:>4s} registers, {spill:>5s} B spill stores", flush=True)


if __name__ == "__main__":
    L._sm_count = lambda index: 132   # the H200's, for the weight gradient's split rule
    # the launch configurations of ops/lka/kernels.py for VAN-b2's stage 1 and 2 maps (C = 64 / 128)
    for c, hw in ((64, 56), (128, 28)):
        for kh, dil, flip, res in [(5, 1, False, False), (7, 3, False, False), (7, 3, True, True)]:
            shape, cl = (128, c, hw, hw), (c * hw * hw, 1, hw * c, c)
            _, _, meta = L.dw_launch(shape, torch.bfloat16, (kh, kh), dil, flip, not flip, res, (cl, cl, cl))
            warps = meta.pop("num_warps")
            report(f"dw_rows {kh}x{kh} d{dil} flip={flip} res={res} R{meta['ROWS']} W{meta['BLOCK_W']} "
                   f"C{meta['BLOCK_C']}", L._dw_rows_kernel, dict(sxc=1, src=1, syc=1, **meta), warps)
            _, (_, _, meta), _ = L.wgrad_launches(shape, torch.bfloat16, (kh, kh), dil, (cl, cl), None)
            warps = meta.pop("num_warps")
            report(f"dw_wgrad {kh}x{kh} d{dil} R{meta['ROWS']} W{meta['BLOCK_W']} C{meta['BLOCK_C']}",
                   L._dw_wgrad_kernel, dict(sgc=1, sxc=1, **meta), warps)
        bp, bci, bco, warps, stages = L._pw_config(c, hw * hw)
        for mode, name in ((L.PW_GATE, "pw gate"), (L.PW_GATE_BWD, "pw gate backward (dx, dt)"),
                           (L.PW_PLAIN, "pw plain (ds)")):
            report(f"{name} P{bp} CI{bci} CO{bco}", L._pw_kernel,
                   dict(ssc=1, sxc=1, sgc=1, soc=1, s2c=1, **({"swo": 1} if mode == L.PW_PLAIN else {"swi": 1}), MODE=mode,
                        FLAT=True, UPCAST=False, PRECISION="tf32", NUM_STAGES=stages, BLOCK_P=bp, BLOCK_CI=bci,
                        BLOCK_CO=bco),
                   warps, stages)
    sys.exit(0)
