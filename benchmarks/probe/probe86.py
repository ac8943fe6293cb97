"""Probe (session 36, written after the device time ran out): the row-block conv with its kernel-
column loop unrolled.

``_dw_row_block`` walks the kernel columns in a runtime loop: each pass loads ROWS + KH - 1 input
rows, then runs their FFMAs, so a pass's loads wait in the open unless other warps cover them.
Session 36 ruled out issue as the 7x7 dilation 3 forward's bound (``probe85.py``: 10% fewer loop
instructions, 0.96x). Unrolled (``tl.static_range``), ptxas may move the next column's loads up
into this column's FFMAs. Offline (Triton 3.6, sm_90a) the 7x7 d3 then compiles to 216 registers
against 128 (half the 2-warp programs per SM) and 3,736 instructions for 1,960 FFMAs, spilling
172-256 bytes on the 128x128 map's [16, 64] strips; ``ab`` therefore also times caps of 128 and
168 registers.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe86.py sass    # offline sm_90a
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe86.py ab      # GPU: vs ops

The unrolled kernel is ops' own with that one line changed, loaded as a second copy of ops
(``ab.load_base``), both launched with ops' row-block rule (``dw_launch``; where ops runs the 5x5
on its tile kernel, the 5x5 rows are for reference); outputs compared bit for bit (same FMAs in
the same order; equal under the interpreter too). Offline ``sass`` output:
``probe-lka-taps-split-s36-h200-2026-12-01.txt``. Session 37 (H200, ops at 3044015, cut at 240 s
after three maps; ``probe-lka-stalls-taps-s37-h200-2026-12-01.txt``): unrolled 0.69-0.89x against
the loop (B64 C64 56x56 7x7 d3 forward 61.7 -> 89.0 us), capped at 168 / 128 registers
0.42-0.98x. Not kept.
"""
import importlib
import itertools
import statistics
import sys
from pathlib import Path

import torch

import ops.lka.kernels as L

LOOP = "    for kw in range(KW):   # runtime loop; the rows and the taps of a column are unrolled\n"
CONVS = [((7, 7), 3), ((5, 5), 1)]


def unrolled_ops():
    """A copy of ``ops`` whose row-block core unrolls the kernel columns, imported as ``ops_base``."""
    from ab import load_base
    load_base(str(Path(L.__file__).parents[1]),
              {"lka/kernels.py": {LOOP: LOOP.replace("range(KW)", "tl.static_range(KW)")}})
    return importlib.import_module("ops_base.lka.kernels")


def _rows_launch(kernels, x, w, b, res, out, kernel, dil, flip, extra=None):
    cl = x.stride()
    grid, scalars, meta = kernels.dw_launch(tuple(x.shape), x.dtype, kernel, dil, flip, b is not None,
                                            res is not None, (cl, cl, cl))
    kernels._dw_rows[grid](x, w, b if b is not None else w, res if res is not None else out, out, *scalars,
                           **{**meta, **(extra or {})})
    return out


def sass() -> None:
    from sm90_registers import DIVISIBLE, compile_sm90, ptxas_usage, sass_counts, signature
    U = unrolled_ops()
    for (b, c, sz), flip in itertools.product([(64, 64, 56), (64, 128, 28), (16, 64, 128)], (False, True)):
        cl = (c * sz * sz, 1, sz * c, c)
        for name, mod in (("ops", L), ("unrolled", U)):
            _, _, meta = mod.dw_launch((b, c, sz, sz), torch.bfloat16, (7, 7), 3, flip, not flip, flip, (cl, cl, cl))
            meta = dict(meta)
            nw = meta.pop("num_warps")
            fn = mod._dw_rows_kernel
            err, cubin = compile_sm90(fn, {n: signature(n) for n in fn.arg_names},
                                      {**meta, "sxc": 1, "src": 1, "syc": 1}, DIVISIBLE, nw, stem="/tmp/_p86")
            regs, spill = ptxas_usage(err)
            n = sass_counts(cubin)
            print(f"B{b} C{c} {sz}x{sz} 7x7 d3 {'dx ' if flip else 'fwd'} {name}: {regs} registers, {spill} B "
                  f"spilled, {sum(n.values())} static instructions, {n['FFMA']} FFMA", flush=True)


def ab() -> None:
    from lka_case import BENCH, VAN, conv_case, us
    U = unrolled_ops()
    for (b, c, sz), (kernel, dil) in itertools.product(BENCH + [s for s in VAN if s[2] >= 28], CONVS):
        x, r, w, bias = conv_case(b, c, sz, kernel)
        row = []
        for flip in (False, True):
            bb, res = (None, r) if flip else (bias, None)
            arms = {"ops": (L, None), "unrolled": (U, None), "@168": (U, {"maxnreg": 168}),
                    "@128": (U, {"maxnreg": 128})}
            outs, times = {}, {}
            for name, (mod, extra) in arms.items():
                o = outs[name] = torch.full_like(x, float("nan"))
                times[name] = statistics.median(
                    us(lambda: _rows_launch(mod, x, w, bb, res, o, kernel, dil, flip, extra)) for _ in range(3))
            t0 = times["ops"]
            row.append(f"{'dx' if flip else 'fwd'} rows {t0:.1f} us, " + ", ".join(
                f"{k} {t:.1f} ({t0 / t:.2f}x{'' if torch.equal(outs[k], outs['ops']) else ' DIFFERENT'})"
                for k, t in times.items() if k != "ops"))
        print(f"B{b} C{c} {sz}x{sz} {kernel[0]}x{kernel[1]} d{dil}: " + "; ".join(row), flush=True)


if __name__ == "__main__":
    {"sass": sass, "ab": ab}[sys.argv[1]]()
