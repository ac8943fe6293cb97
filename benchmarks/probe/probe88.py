"""Probe (session 37): the row-block conv's bf16 conversion moved off the integer pipe.

Nsight Compute (``probe-lka-stalls-taps-s37-h200-2026-12-01.txt``) found the 7x7 dilation 3 row
blocks issuing 73% of their slots, ALU the busiest pipe (40%) and 0.46 cycles per instruction lost
to math-pipe throttle. Per kernel column at B64 C64 56x56 the loop runs ~150 half-rate ALU
instructions (32 shifts and 32 masks converting 16 rows x 4 bf16 channels, 28 tap conversions
with bf16 taps, addresses and masks) against 280 FFMAs. ``_to_f32`` converts the low half of a
packed pair with ``shl.b32``; here it is ``mul.lo.u32`` by a register that holds 65536 (built
from the channel index and ``H >> 31``, which ptxas cannot fold, so it stays an IMAD on the FMA
pipe; with a constant ptxas turns the multiply back into a shift). Offline (Triton 3.6, sm_90a,
fp32 taps): the forward's SHF 41 -> 9, IMAD 14 -> 46, same 976 instructions, 128 -> 129
registers (``ab`` also runs it capped at 128).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe88.py sass    # offline sm_90a
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe88.py ab      # GPU: vs ops

The variant is ops with the row-block core's conversion replaced (a second copy through
``ab.load_base``), both launched with ops' row-block rule; outputs compared bit for bit (a
multiply by 65536 is the shift).

Session 37 (H200, ops at e4ec067; ``probe-lka-stalls-taps-s37-h200-2026-12-01.txt``): 0.93-1.06x
on the bench's and VAN's maps (B64 C64 56x56 forward 61.6 -> 64.5 us with fp32 taps, 65.8 ->
63.3 with bf16), capped at 128 registers 0.96-1.10x and 0.16-0.48x on 128x128 (spills); outputs
bit-equal. No consistent gain: not kept.
"""
import importlib
import itertools
import statistics
import sys
from pathlib import Path

import torch

import ops.lka.kernels as L

HELPER = '''@triton.jit
def _to_f32_k(x, k, PACKED: tl.constexpr):
    """``_to_f32`` with the low half's shift as a multiply by ``k`` (65536 as packed int16 pairs)."""
    if PACKED:
        return tl.inline_asm_elementwise("mul.lo.u32 $0, $2, $3;\\n\\tand.b32 $1, $2, 0xffff0000;", "=r,=r,r,r",
                                         [x, k], dtype=tl.float32, is_pure=True, pack=2)
    else:
        return x.to(tl.float32)


@triton.jit
def _dw_row_block('''
LOOP = "    PW: tl.constexpr = DIL * (KW - 1) // 2\n    for kw in range(KW):"
# (c % 2) pairs into 0x00010000 per two channels; H >> 31 (0 on any map) keeps it a register
K16 = "    k16 = ((offs_c % 2) | (H >> 31)).to(tl.int16)[None, :] + tl.zeros([BLOCK_W, BLOCK_C], tl.int16)\n"
LOAD = "            xv = _to_f32(tl.load(col + row * sxh, mask=m & (row >= 0) & (row < H), other=0.0), PACKED)"
EDITS = {"lka/kernels.py": {"@triton.jit\ndef _dw_row_block(": HELPER,
                            LOOP: LOOP.replace("\n", "\n" + K16),
                            LOAD: LOAD.replace("_to_f32(", "_to_f32_k(").replace(", PACKED)", ", k16, PACKED)")}}


def imad_ops():
    """A copy of ``ops`` whose row-block core converts with the multiply, imported as ``ops_base``."""
    from ab import load_base
    load_base(str(Path(L.__file__).parents[1]), EDITS)
    return importlib.import_module("ops_base.lka.kernels")


def sass() -> None:
    from sm90_registers import DIVISIBLE, compile_sm90, ptxas_usage, sass_counts, signature
    M = imad_ops()
    for (b, c, sz), flip, tap in itertools.product([(64, 64, 56), (64, 128, 28), (16, 64, 128)], (False, True),
                                                   ("*fp32", "*bf16")):
        cl = (c * sz * sz, 1, sz * c, c)
        for name, mod in (("ops", L), ("imad", M)):
            meta = dict(mod.dw_launch((b, c, sz, sz), torch.bfloat16, (7, 7), 3, flip, not flip, flip, (cl, cl, cl))[2])
            nw = meta.pop("num_warps")
            fn = mod._dw_rows_kernel
            err, cubin = compile_sm90(fn, {n: signature(n) for n in fn.arg_names} | {"Wt": tap},
                                      {**meta, "sxc": 1, "src": 1, "syc": 1}, DIVISIBLE, nw, stem="/tmp/_p88")
            n = sass_counts(cubin)
            print(f"B{b} C{c} {sz}x{sz} 7x7 d3 {'dx ' if flip else 'fwd'} taps {tap[1:]} {name}: "
                  f"{ptxas_usage(err)[0]} registers, {sum(n.values())} instructions, {n['FFMA']} FFMA, {n['SHF']} SHF, "
                  f"{n['IMAD']} IMAD, {n['LOP3']} LOP3", flush=True)


def ab() -> None:
    from lka_case import BENCH, VAN, conv_case, us
    from probe86 import _rows_launch
    M = imad_ops()
    for (b, c, sz), tap in itertools.product(BENCH + [s for s in VAN if s[2] >= 28], (torch.float32, torch.bfloat16)):
        x, r, w, bias = conv_case(b, c, sz, (7, 7), tap)
        row = []
        for flip in (False, True):
            bb, res = (None, r) if flip else (bias, None)
            arms = {"ops": (L, None), "imad": (M, None), "imad@128": (M, {"maxnreg": 128})}
            outs, times = {}, {name: [] for name in arms}
            for _ in range(3):   # alternated, so every arm meets the same clocks
                for name, (mod, extra) in arms.items():
                    o = outs.setdefault(name, torch.full_like(x, float("nan")))
                    times[name].append(us(lambda: _rows_launch(mod, x, w, bb, res, o, (7, 7), 3, flip, extra)))
            t = {k: statistics.median(v) for k, v in times.items()}
            row.append(f"{'dx' if flip else 'fwd'} {t['ops']:.1f} us, " + ", ".join(
                f"{k} {t[k]:.1f} ({t['ops'] / t[k]:.2f}x{'' if torch.equal(outs[k], outs['ops']) else ' DIFFERENT'})"
                for k in arms if k != "ops"))
        print(f"B{b} C{c} {sz}x{sz} 7x7 d3 taps {str(tap)[6:]}: " + "; ".join(row), flush=True)


if __name__ == "__main__":
    {"sass": sass, "ab": ab}[sys.argv[1]]()
