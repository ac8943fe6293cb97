"""Probe (session 9, for the next GPU run): launch variants of the depthwise weight gradient
(``dw_conv_weight_grad``) on VAN-b0/b2's layer shapes at batch 128 (channels-last bf16), against
the default: rows per item (8, the default, or 12) and the work per split (the default ~4
programs per SM and <= 512 pixels per split, or at least 1024 / 4096 pixels per split, which
amortizes the per-column reductions that dominate on 7x7 maps). probe22 measured 12 rows faster
for the dilated 7x7 (326 vs 396 us at C64 56x56) and the row-block gradient slower than the
per-tap one on 7x7 maps (186 vs 113 us at C512); this probe picks the rule.
Run at bd4eb26 (session 10, ``probe-lka-wgrad-s10-h200-2026-11-29.txt``): the rule it chose
(12 rows and >= 1024 pixels per split on maps of 28x28 and more) is now the default, so on
those maps "default" equals R12P1024 after that commit.

    python benchmarks/probe/probe25.py
"""
import torch

import ops.lka.kernels as L
from ops.common.tuning import cdiv

from lka_case import VAN, us  # the script's folder is on sys.path

ROWS_CONFIG, SPLITS = L._rows_config, L._wgrad_splits


def min_pixels(px):
    def splits(total, n_cblocks, item_pixels, device, *_):   # the rule before session 10's min_pixels
        nsplit, per_split = SPLITS(total, n_cblocks, item_pixels, device)
        per_split = min(total, max(per_split, cdiv(px, item_pixels)))
        return cdiv(total, per_split), per_split
    return splits


VARIANTS = {"R12": (12, SPLITS), "P1024": (8, min_pixels(1024)), "P4096": (8, min_pixels(4096)),
            "R12P1024": (12, min_pixels(1024))}



def main():
    torch.manual_seed(0)
    names = "  ".join(f"{n:>8s}" for n in VARIANTS)
    print(f"shape           | 5x5 d1: default {names} | 7x7 d3: default {names} | max rel diff")
    for b, c, s in VAN:
        x, g = (torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
                for _ in range(2))
        cells, diff = [], 0.0
        for k, d in ((5, 1), (7, 3)):
            ref = L.dw_conv_weight_grad(g, x, (k, k), d)
            cells.append(us(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
            for rows, splits in VARIANTS.values():
                L._rows_config = lambda c, h, w, dil, max_rows, rows=rows, **kw: ROWS_CONFIG(c, h, w, dil, rows, **kw)
                L._wgrad_splits = splits
                out = L.dw_conv_weight_grad(g, x, (k, k), d)
                diff = max(diff, max(((a - r).abs().max() / r.abs().max()).item() for a, r in zip(out, ref)))
                cells.append(us(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
                L._rows_config, L._wgrad_splits = ROWS_CONFIG, SPLITS
        n = len(cells) // 2
        print(f"B{b} C{c} {s}x{s}".ljust(16) + "| " + "  ".join(f"{v:6.0f}" for v in cells[:n]) + " | "
              + "  ".join(f"{v:6.0f}" for v in cells[n:]) + f" | {diff:.1e}", flush=True)
    print("(microseconds, do_bench median)")


if __name__ == "__main__":
    main()
