"""Probe (session 16, no GPU needed): registers, spills, SASS instructions and the size of the main
loop of NA's forward, dQ and dK/dV kernels on the five bench cases, this tree's ``ops`` against
another copy (``ab.py``), compiled offline for sm_90 (``probe40.compile_counts``: the launch's
meta-parameters and Triton's integer specialization). The main loop is the longest backward
branch's body: one key block of a walk per iteration. Warps as the kernels' rules pick them;
stages and register caps as their autotuners offer them.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe44.py /tmp/base/ops
"""
import sys

import ops
import probe40
from ab import load_base
from probe40 import compile_counts

CASES = {"NA-2D large": ((1, 96, 96, 24, 128), ((17, 17), (1, 1), (1, 1), (False, False))),
         "NA-2D backbone": ((64, 56, 56, 4, 32), ((7, 7), (1, 1), (1, 1), (False, False))),
         "NA-3D video": ((1, 20, 48, 80, 12, 128), ((7, 15, 15), (1, 1, 1), (1, 1, 1), (False,) * 3)),
         "GNA-2D": ((1, 96, 96, 24, 128), ((16, 16), (1, 1), (8, 16), (False, False))),
         "GNA-3D": ((1, 20, 48, 80, 12, 128), ((8, 16, 16), (1, 1, 1), (2, 8, 8), (False,) * 3))}


def main():
    base = load_base(sys.argv[1])
    print("case           kernel   config     registers  spill B  SASS         main loop (base -> this)")
    for case, (shape, window) in CASES.items():
        probe40.SHAPE, probe40.WINDOW = shape, window
        res = {}
        for label, mod in (("base", base), ("this", ops)):
            for name, fn, vals in probe40.launches(mod):
                rows = (vals["BN0"] * vals["BN1"] * vals["BN2"] if name.startswith("dK/dV")
                        else vals["BM0"] * vals["BM1"] * vals["BM2"])
                warps = 8 if rows >= 128 else (1 if rows <= 32 and name == "forward" else 4)
                for s in ((2, 3) if name == "forward" else (1, 2)):
                    for r in ((None, 128) if warps == 1 else (None,)):
                        res[(name, s, r, label)] = compile_counts(fn, vals, warps, s, r)
        for key in sorted({k[:3] for k in res}, key=str):
            b, t = res[(*key, "base")], res[(*key, "this")]
            config = f"s{key[1]}" + (f" cap{key[2]}" if key[2] else "")
            print(f"{case:14s} {key[0]:8s} {config:9s} {b[0]:3d} -> {t[0]:3d}  {b[1]:3d} -> {t[1]:3d}"
                  f"  {b[2]:4d} -> {t[2]:4d}  {b[3]:4d} -> {t[3]:4d} ({(t[3] - b[3]) / b[3]:+.1%})", flush=True)


if __name__ == "__main__":
    main()
