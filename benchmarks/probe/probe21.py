"""Probe (session 9): the row-block depthwise kernel (``_dw_rows_kernel``) against the per-tap
kernel (``_dw_conv_kernel``) it replaces, on the LKA bench shapes and VAN-b0/b2's layer shapes
(channels-last bf16), plus launch-configuration variants, and the LKA chain (forward, and forward
+ backward through ``ops.large_kernel_attention``) with the per-tap kernels, with the row-block
kernel for the 5x5 (the 7x7 inside the fused 1x1 + gate kernel), and with the row-block kernel for
both convs followed by the 1x1 + gate kernel alone ("split").

    python benchmarks/probe/probe21.py

Ran at 085ac68; the ``FOVEAL_LKA_*`` switches it toggles (module globals of ``ops.lka.kernels``)
were removed when the row-block kernels became the only path, so run it in a checkout of that
commit.
"""
import torch

import ops
import ops.lka.kernels as L
from ops.common.tuning import cdiv, next_power_of_2

from lka_case import BENCH, VAN, us  # the script's folder is on sys.path

BASE = L._rows_config


def _variant(rmax, block_w, max_c, warps):
    def config(c, h, w, dil):
        per = cdiv(h, dil)
        bw = min(next_power_of_2(w), block_w)
        return cdiv(per, cdiv(per, rmax)), bw, min(max(16, next_power_of_2(c)), max_c, 256 * warps // bw), warps
    return config


VARIANTS = {"R4": _variant(4, 16, 64, 4), "R12": _variant(12, 16, 64, 4), "W8C128": _variant(8, 8, 128, 4),
            "W16C128w8": _variant(8, 16, 128, 8)}



def conv_row(b, c, s, variants):
    x = torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    cells, diff = [], 0.0
    for k, d, flip in ((5, 1, False), (7, 3, False), (7, 3, True)):
        w = torch.randn(c, 1, k, k, device="cuda") * 0.1
        bias = None if flip else torch.randn(c, device="cuda")
        L._ROWS = False
        ref = L.dw_conv(x, w, bias, d, flip=flip)
        cells.append(us(lambda: L.dw_conv(x, w, bias, d, flip=flip)))
        L._ROWS = True
        diff = max(diff, (L.dw_conv(x, w, bias, d, flip=flip).float() - ref.float()).abs().max().item())
        cells.append(us(lambda: L.dw_conv(x, w, bias, d, flip=flip)))
        for name in variants:
            L._rows_config = VARIANTS[name]
            cells.append(us(lambda: L.dw_conv(x, w, bias, d, flip=flip)))
            L._rows_config = BASE
    return cells, diff


def chain_row(b, c, s):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16, generator=g).to(memory_format=torch.channels_last)
    shapes = [(c, 1, 5, 5), (c,), (c, 1, 7, 7), (c,), (c, c, 1, 1), (c,)]
    ws = [torch.randn(*sh, device="cuda", generator=g) * sc for sh, sc in zip(shapes, [0.2, 1, 0.15, 1, c ** -0.5, 1])]
    xg = x.detach().clone().requires_grad_()
    wg = [w.detach().clone().requires_grad_() for w in ws]
    go = torch.randn_like(x)
    cells, outs = [], []
    for rows, split in ((False, False), (True, False), (True, True)):
        L._ROWS, L._SPLIT_PW = rows, split
        with torch.autocast("cuda", torch.bfloat16):
            outs.append(ops.large_kernel_attention(x, *ws).float())
            cells.append(us(lambda: ops.large_kernel_attention(x, *ws)))

            def fb():
                for t in (xg, *wg):
                    t.grad = None
                ops.large_kernel_attention(xg, *wg).backward(go)
            cells.append(us(fb))
    L._ROWS, L._SPLIT_PW = True, False
    diff = max((o - outs[0]).abs().max().item() for o in outs[1:])
    return cells, diff


def main():
    torch.manual_seed(0)
    names = list(VARIANTS)
    head = "old  rows " + " ".join(names)
    print(f"== depthwise conv alone, us: per conv (5x5 d1 | 7x7 d3 | 7x7 d3 flipped): {head}")
    for b, c, s in BENCH + VAN:
        cells, diff = conv_row(b, c, s, names if (b, c, s) in BENCH or c == 320 else [])
        print(f"B{b} C{c} {s}x{s}".ljust(16) + " | ".join(" ".join(f"{v:6.0f}" for v in cells[i:i + len(cells) // 3])
                                                   for i in range(0, len(cells), len(cells) // 3))
              + f" | max diff vs old {diff:.2e}", flush=True)
    print("== LKA chain (autocast bf16, channels-last), us: fwd / fwd+bwd for old taps | rows 5x5 | rows both + split pw")
    for b, c, s in BENCH + VAN:
        cells, diff = chain_row(b, c, s)
        print(f"B{b} C{c} {s}x{s}".ljust(16) + " | ".join(f"{cells[i]:6.0f} {cells[i + 1]:6.0f}" for i in range(0, 6, 2))
              + f" | max out diff {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
