"""Probe (session 10): launch configurations of the row-block depthwise kernels with 4 elements
per thread instead of 8, for occupancy. Offline sm_90 compiles (``sm90_registers.py``) gave the
default forward tiles (12 rows, [16 columns, 64 channels], 4 warps) 201 registers for 5x5 and 255
plus spills for 7x7 dilation 3, i.e. 8 warps per SM; the same tile on 8 warps needs 176 / 202,
and 8 rows on 8 warps 97 / 105. Conv (forward, and the flipped 7x7 of the backward) and weight
gradient, channels-last bf16, on the lka bench shapes and VAN-b0/b2's layer shapes; each variant
is checked against the default's output.

    python benchmarks/probe/probe27.py

Ran at 7eff20c (``probe-lka-config-s10-h200-2026-11-29.txt``), where "default" was 8 elements per
thread everywhere; the rule it chose is ``kernels._conv_elems`` and, for the weight gradient, 4
elements per thread up to 28 columns.
"""
import torch

import ops.lka.kernels as L
from ops.common.tuning import cdiv, next_power_of_2

from lka_case import BENCH, VAN, us  # the script's folder is on sys.path

BASE = L._rows_config


def _variant(rows_cap, elems, warps):
    """max_rows -> min(max_rows, rows_cap) (None: keep), row tiles of ``elems`` elements."""
    def config(c, h, w, dil, max_rows, elems=None):   # elems: the caller's choice, replaced
        rmax = max_rows if rows_cap is None else rows_cap
        per = cdiv(h, dil)
        bw = min(next_power_of_2(w), 16 if c >= 64 else 32)
        return cdiv(per, cdiv(per, rmax)), bw, min(max(16, next_power_of_2(c)), elems // bw), warps
    return config


VARIANTS = {"w8": _variant(None, 1024, 8), "R8w8": _variant(8, 1024, 8), "R16w8": _variant(16, 1024, 8),
            "half": _variant(None, 512, 4), "R8half": _variant(8, 512, 4)}


def run(fn, ref):
    out = fn()
    diff = max(((a.float() - r.float()).abs().max() / r.float().abs().max()).item()
               for a, r in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)))
    return us(fn), diff


def main():
    torch.manual_seed(0)
    head = " ".join(f"{n:>7s}" for n in ["default", *VARIANTS])
    print(f"shape            kernel        | {head} | max rel diff")
    for b, c, s in BENCH + VAN:
        x, g = (torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
                for _ in range(2))
        for k, d in ((5, 1), (7, 3)):
            w = torch.randn(c, 1, k, k, device="cuda") * 0.1
            bias = torch.randn(c, device="cuda")
            for label, fn in ((f"conv {k}x{k} d{d}", lambda: L.dw_conv(x, w, bias, d)),
                              (f"flip {k}x{k} d{d}", lambda: L.dw_conv(g, w, None, d, flip=True)),
                              (f"wgrad {k}x{k} d{d}", lambda: L.dw_conv_weight_grad(g, x, (k, k), d))):
                if label.startswith("flip") and k == 5:
                    continue
                ref = fn()
                cells, diff = [us(fn)], 0.0
                for config in VARIANTS.values():
                    L._rows_config = config
                    t, dd = run(fn, ref)
                    L._rows_config = BASE
                    cells.append(t)
                    diff = max(diff, dd)
                print(f"B{b} C{c} {s}x{s}".ljust(17) + label.ljust(14) + "| "
                      + " ".join(f"{v:7.0f}" for v in cells) + f" | {diff:.1e}", flush=True)
    print("(microseconds, do_bench median)")


if __name__ == "__main__":
    main()
