"""Probe (session 37): the tile conv reading its taps as one coalesced block.

``_dw_tiles_kernel`` (the 5x5 on channels-last maps) loads its 25 taps per channel as 25 vectors
``Wt + offs_c * 25 + tap``: one warp instruction touches 32 lanes x 2 channels 50 bytes apart,
~25 cache lines for 64 useful bytes. Session 36's fp32 tap-major copy (``probe85.py``, ``W_T``)
made those loads contiguous and ran the 5x5 1.26-1.29x faster on 56x56 maps, but needs a
transposition launch per call. Here the program loads its [64 channels, 32] block of the [C, 25]
weight itself (a masked 2-D load, consecutive taps on consecutive lanes, ~13 lines a warp) and
splits it in registers into the 25 channel vectors (``_unpack_taps``: reshape, permute and
``tl.split``, the tap axis halved five times; the compiler moves the block through shared memory
once, 8-16 STS + 8 LDSM). Offline (Triton 3.6, sm_90a): +112 instructions a program with fp32
taps (2,040 -> 2,152; 1,200 FFMA), +208 with bf16 taps; the 4x4 input gradient 158 -> 182-200
registers.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe87.py sass    # offline sm_90a
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe87.py strides # offline: row blocks
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe87.py ab      # GPU: vs ops
    ncu --clock-control none -k regex:"_dw_(tiles|rows)_kernel" -s 2 -c 2 --section WarpStateStats \
        --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio \
        python benchmarks/probe/ncu_lka.py      # stall reasons of the tile 5x5 and the 7x7 d3

The variant is ops with the tile kernel's tap loads replaced (a second copy of ops through
``ab.load_base``), so both run ops' launch rule; outputs compared bit for bit (same taps, same
FMA order).

Session 37 (H200, ops at 3044015; ``probe-lka-stalls-taps-s37-h200-2026-12-01.txt``): the block
0.86-1.04x against ops on the bench's and VAN's maps (B64 C64 56x56, bf16 taps: forward 34.9 ->
37.7 us, input gradient 41.5 -> 48.0): the scattered tap loads do not bound the tile kernel
(Nsight Compute: its idle issue slots wait on dispatch, the LSU queue of its 131 loads a program
and their latency, at 2.8 warps per scheduler). Not kept. ``strides``: constexpr strides give the
row blocks more registers (128 -> 165-198) and more address adds, not fewer; not timed.
"""
import importlib
import itertools
import statistics
import sys
from pathlib import Path

import torch

import ops.lka.kernels as L

OLD = """    ws = ()
    for tap in tl.static_range(TAPS):
        ws = ws + (tl.load(Wt + offs_c * TAPS + (TAPS - 1 - tap if FLIP else tap)).to(tl.float32),)
"""
NEW = """    TP: tl.constexpr = 32 if TAPS <= 32 else 64
    offs_t = tl.arange(0, TP)
    rows = _unpack_taps(tl.load(Wt + offs_c[:, None] * TAPS + offs_t[None, :], mask=offs_t[None, :] < TAPS,
                                other=0.0).to(tl.float32), BLOCK_C, TP)
    ws = ()
    for tap in tl.static_range(TAPS):
        ws = ws + (rows[TAPS - 1 - tap if FLIP else tap],)
"""
HELPER = '''@triton.jit
def _unpack_taps(w, BLOCK_C: tl.constexpr, TP: tl.constexpr):
    """[BLOCK_C, TP] -> tuple of the TP [BLOCK_C] columns in order: the tap axis halved per level."""
    parts = (w,)
    for level in tl.static_range(TP.bit_length() - 1):
        new = ()
        for p in tl.static_range(1 << level):
            if (TP >> (level + 1)) == 1:
                a, b = tl.split(parts[p])
            else:
                a, b = tl.split(tl.permute(tl.reshape(parts[p], [BLOCK_C, 2, TP >> (level + 1)]), (0, 2, 1)))
            new = new + (a, b)
        parts = new
    return parts


@triton.jit
def _dw_tiles_kernel(
'''


def block_ops():
    """A copy of ``ops`` whose tile conv loads its taps as one block, imported as ``ops_base``."""
    from ab import load_base
    load_base(str(Path(L.__file__).parents[1]),
              {"lka/kernels.py": {OLD: NEW, "@triton.jit\ndef _dw_tiles_kernel(\n": HELPER}})
    return importlib.import_module("ops_base.lka.kernels")


def sass() -> None:
    from sm90_registers import DIVISIBLE, compile_sm90, ptxas_usage, sass_counts, signature
    B = block_ops()
    for (b, c, sz), flip, tap in itertools.product([(64, 64, 56), (64, 128, 28), (128, 32, 56), (128, 512, 7)],
                                                   (False, True), ("*fp32", "*bf16")):
        cl = (c * sz * sz, 1, sz * c, c)
        for name, mod in (("ops", L), ("block", B)):
            launch = mod.dw_tile_launch((b, c, sz, sz), torch.bfloat16, (5, 5), 1, flip, not flip, flip, (cl, cl, cl))
            if launch is None:
                continue
            meta = dict(launch[2])
            nw = meta.pop("num_warps")
            fn = mod._dw_tiles_kernel
            sig = {n: signature(n) for n in fn.arg_names} | {"Wt": tap}
            err, cubin = compile_sm90(fn, sig, meta, DIVISIBLE, nw, stem="/tmp/_p87")
            regs = ptxas_usage(err)[0]
            n = sass_counts(cubin)
            print(f"B{b} C{c} {sz}x{sz} 5x5 {'dx ' if flip else 'fwd'} taps {tap[1:]} {name}: {regs} registers, "
                  f"{sum(n.values())} instructions, {n['FFMA']} FFMA, {n['LDG']} LDG, {n['STS']} STS, "
                  f"{n['LDSM']} LDSM", flush=True)


def strides() -> None:
    """Offline: the row-block 7x7 d3 with its spatial strides compiled in as constants (immediate
    offsets for its 16 row loads a column, as the tile kernel's constexpr strides give it)."""
    from sm90_registers import DIVISIBLE, compile_sm90, ptxas_usage, sass_counts, signature
    for (b, c, sz), flip in itertools.product([(64, 64, 56), (64, 128, 28), (16, 64, 128)], (False, True)):
        cl = (c * sz * sz, 1, sz * c, c)
        meta = dict(L.dw_launch((b, c, sz, sz), torch.bfloat16, (7, 7), 3, flip, not flip, flip, (cl, cl, cl))[2])
        nw = meta.pop("num_warps")
        fn = L._dw_rows_kernel
        for name, extra in (("ops", {}), ("constexpr strides", {k: v for n in "xry" for k, v in
                                                                (("s%sh" % n, sz * c), ("s%sw" % n, c))})):
            err, cubin = compile_sm90(fn, {n: signature(n) for n in fn.arg_names},
                                      {**meta, "sxc": 1, "src": 1, "syc": 1, **extra}, DIVISIBLE, nw, stem="/tmp/_p87")
            regs = ptxas_usage(err)[0]
            n = sass_counts(cubin)
            print(f"B{b} C{c} {sz}x{sz} 7x7 d3 {'dx ' if flip else 'fwd'} {name}: {regs} registers, "
                  f"{sum(n.values())} instructions, {n['FFMA']} FFMA, {n['IADD3']} IADD3", flush=True)


def ab() -> None:
    from lka_case import BENCH, VAN, conv_case, us
    B = block_ops()
    # the bench's maps with both tap dtypes (its own bf16, autocast's fp32), VAN's (autocast's fp32)
    cases = list(itertools.product(BENCH, (torch.bfloat16, torch.float32))) + [(s, torch.float32) for s in VAN]
    for (b, c, sz), tap in cases:
        if L.dw_tile_launch((b, c, sz, sz), torch.bfloat16, (5, 5), 1, False, True, False, ((1,) * 4,) * 3) is None \
                and L.dw_tile_launch((b, c, sz, sz), torch.bfloat16, (5, 5), 1, True, False, True,
                                     ((1,) * 4,) * 3) is None:
            continue
        x, r, w, bias = conv_case(b, c, sz, (5, 5), tap)
        row = []
        for flip in (False, True):
            bb, res = (None, r) if flip else (bias, None)
            outs, times = {}, {}
            for name, mod in (("ops", L), ("block", B)):
                o = outs[name] = torch.full_like(x, float("nan"))
                times[name] = statistics.median(
                    us(lambda: mod.dw_conv(x, w, bb, 1, flip, res, o)) for _ in range(3))
            same = "" if torch.equal(outs["ops"], outs["block"]) else " DIFFERENT"
            row.append(f"{'dx' if flip else 'fwd'} {times['ops']:.1f} -> {times['block']:.1f} us "
                       f"({times['ops'] / times['block']:.2f}x{same})")
        print(f"B{b} C{c} {sz}x{sz} 5x5 taps {str(tap)[6:]}: " + "; ".join(row), flush=True)


if __name__ == "__main__":
    {"sass": sass, "strides": strides, "ab": ab}[sys.argv[1]]()
