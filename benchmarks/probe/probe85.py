"""Probe (session 36): the depthwise convs reading their taps as fp32 [taps, C] (``W_T``).

The row-block core loads a column's taps from the [C, taps] weight on every pass of its kernel
column loop: offline sm_90a (Triton 3.6) the 7x7 dilation 3 forward at B64 C64 56x56 issues 28
16-bit loads and 28 conversions per column, for 4 channels x 7 taps a thread, in a loop of 511
instructions for 280 FFMAs. Tap-major fp32 taps (``W_T`` = the tap stride, C) make them 7 128-bit
loads with immediate offsets: 462 instructions per column (1.83 -> 1.65 per FFMA), same 128
registers. The tile kernel hoists its taps, so it gains a little per program (50 16-bit loads and
their conversions -> 25 64-bit loads).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe85.py sass    # offline sm_90a
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe85.py ab      # GPU: vs ops' launches

``ab`` times each conv of the LKA (forward, and the flipped input gradient with its residual) with
ops' launch and with ``W_T``, bf16 channels-last, fp32 weights (autocast's), outputs compared
bit for bit, on the bench's and VAN's maps; and the transposition's own time (one copy kernel).
It also times the tile kernel's ``SPLIT`` (blocks whose halo lies inside the map without masks:
~1.25 instructions per FFMA on that path against 1.67, but 168 -> 190 registers).

Session 36 (H200, ops at 06ae538, cut at 300 s after the bench's maps;
``probe-lka-taps-split-s36-h200-2026-12-01.txt``), us, outputs bit-equal:

| conv | B64 C64 56x56 fwd / dx | B64 C128 28x28 fwd / dx | B16 C64 128x128 fwd / dx |
|---|---|---|---|
| 7x7 d3, ops -> W_T | 62.0 -> 64.8 / 69.7 -> 66.8 | 36.5 -> 33.9 / 39.7 -> 38.1 | 86.6 -> 89.7 / 84.0 -> 82.5 |
| 5x5, ops -> W_T | 43.3 -> 33.6 / 49.8 -> 39.6 | 20.1 -> 20.3 / 26.2 -> 26.4 | not reached |
| 5x5, W_T + SPLIT (at 168 registers) | 42.4 (35.7) / 48.4 (44.2) | 25.9 (20.4) / 28.1 (25.2) | |

The transposition took 4.1-5.3 us a call. ``W_T`` helps only the tile 5x5 on 56-column maps with
fp32 taps (1.26-1.29x), the row-block 7x7 d3 0.96-1.08x; ``SPLIT`` loses to ``W_T`` alone
everywhere. Neither joined ops (a transposition launch per forward for ~10 us on one map size);
this probe needs 06ae538's ops.
"""
import itertools
import re
import statistics
import sys

import torch

import ops.lka.kernels as L

CONVS = [((7, 7), 3), ((5, 5), 1)]


def taps(weight: torch.Tensor) -> torch.Tensor:
    """fp32 [taps, C] of a [C, 1, kh, kw] depthwise weight (one copy kernel)."""
    c = weight.shape[0]
    return torch.empty(weight[0].numel(), c, device=weight.device).copy_(weight.reshape(c, -1).t())


def _launch(x, w, b, res, out, kernel, dil, flip, extra: dict):
    """One conv through ops' launch, its meta-parameters updated with ``extra``."""
    cl = x.stride()
    launcher, (grid, scalars, meta) = L.conv_launch(tuple(x.shape), x.dtype, kernel, dil, flip, b is not None,
                                                    res is not None, (cl, cl, cl))
    launcher[grid](x, w, b if b is not None else w, res if res is not None else out, out, *scalars,
                   **{**meta, **extra})
    return out


def _loop_counts(text: str):
    """Opcode counts of the body of the first loop (a branch to a lower address: the row blocks'
    kernel column loop), or of the whole kernel when it has none (the tile kernel)."""
    from sm90_registers import opcode_counts
    lines = text.splitlines()
    for k, ln in enumerate(lines):
        m = re.match(r"\s+/\*([0-9a-f]{4})\*/\s+(?:@!?P\d\s+)?BRA (0x[0-9a-f]+)", ln)
        if m and int(m.group(2), 16) < int(m.group(1), 16):
            start = int(m.group(2), 16)
            lines = [x for x in lines[:k + 1] if (a := re.match(r"\s+/\*([0-9a-f]{4})\*/", x))
                     and int(a.group(1), 16) >= start]
            break
    return opcode_counts("\n".join(lines))


def sass() -> None:
    from sm90_registers import DIVISIBLE, compile_sm90, ptxas_usage, sass_text, signature
    for (b, c, sz), (kernel, dil), flip in itertools.product([(64, 64, 56), (64, 128, 28), (16, 64, 128)], CONVS,
                                                             (False, True)):
        cl = (c * sz * sz, 1, sz * c, c)
        launcher, (_, _, meta) = L.conv_launch((b, c, sz, sz), torch.bfloat16, kernel, dil, flip, not flip, flip,
                                               (cl, cl, cl))
        meta = dict(meta)
        nw = meta.pop("num_warps")
        fn = launcher.fn
        arms = [("ops", {"W_T": 0}), ("W_T", {"W_T": c})]
        if fn is L._dw_tiles_kernel:
            arms = [(name, {**extra, "SPLIT": False}) for name, extra in arms]
            arms.append(("W_T+SPLIT", {"W_T": c, "SPLIT": True}))
        for name, extra in arms:
            sig = {n: signature(n) for n in fn.arg_names}
            if extra["W_T"]:
                sig["Wt"] = "*fp32"
            # the GPU launch specializes the unit channel strides
            consts = {**meta, **extra, **{n: 1 for n in ("sxc", "src", "syc") if n in fn.arg_names}}
            err, cubin = compile_sm90(fn, sig, consts, DIVISIBLE, nw, stem="/tmp/_p85")
            regs = ptxas_usage(err)[0]
            n = _loop_counts(sass_text(cubin))
            print(f"B{b} C{c} {sz}x{sz} {kernel[0]}x{kernel[1]} d{dil} {'flip' if flip else 'fwd '} "
                  f"{fn.__name__} {name}: {regs} registers, loop {sum(n.values())} "
                  f"instructions, {n['FFMA']} FFMA, {n['LDG']} LDG ({sum(n.values()) / n['FFMA']:.2f} per FFMA)",
                  flush=True)


def ab() -> None:
    from lka_case import BENCH, VAN, us
    shapes = BENCH + [s for s in VAN if s[2] >= 14] if sys.argv[2:3] != ["quick"] else BENCH
    for (b, c, sz), (kernel, dil) in itertools.product(shapes, CONVS):
        torch.manual_seed(0)
        x, r = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
                .contiguous(memory_format=torch.channels_last) for _ in range(2))
        w = torch.randn(c, 1, *kernel, device="cuda") * 0.1
        bias = torch.randn(c, device="cuda")
        wt = taps(w)
        row = []
        for flip in (False, True):
            bb, res = (None, r) if flip else (bias, None)
            cl = x.stride()
            tiles = L.conv_launch(tuple(x.shape), x.dtype, kernel, dil, flip, bb is not None, res is not None,
                                  (cl, cl, cl))[0] is L._dw_tiles
            arms = {"ops": (w, {}), "W_T": (wt, {"W_T": c})}
            if tiles:
                arms.update({"W_T+SPLIT": (wt, {"W_T": c, "SPLIT": True}),
                             "W_T+SPLIT@168": (wt, {"W_T": c, "SPLIT": True, "maxnreg": 168})})
            outs, times = {}, {}
            for name, (w_, extra) in arms.items():
                o = outs[name] = torch.full_like(x, float("nan"))
                times[name] = statistics.median(us(lambda: _launch(x, w_, bb, res, o, kernel, dil, flip, extra))
                                                for _ in range(3))
            t0 = times["ops"]
            row.append(f"{'dx' if flip else 'fwd'} ops {t0:.1f} us, " + ", ".join(
                f"{k} {t:.1f} ({t0 / t:.2f}x{'' if torch.equal(outs[k], outs['ops']) else ' DIFFERENT'})"
                for k, t in times.items() if k != "ops"))
        t_taps = statistics.median(us(lambda: taps(w)) for _ in range(3))
        print(f"B{b} C{c} {sz}x{sz} {kernel[0]}x{kernel[1]} d{dil}: " + "; ".join(row)
              + f"; transposing the taps {t_taps:.1f} us", flush=True)


if __name__ == "__main__":
    {"sass": sass, "ab": ab}[sys.argv[1]]()
