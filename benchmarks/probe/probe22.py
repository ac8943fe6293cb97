"""Probe (session 9): the row-block depthwise weight gradient (``_dw_wgrad_rows_kernel``) against
the chunked per-tap kernel (``_dw_wgrad_kernel``, a0fd3a1's configuration), on the LKA bench shapes
and VAN-b0/b2's layer shapes (channels-last bf16, fp32 partials), with row-block variants (rows per
item, pixels per split); then the LKA chain forward+backward with every row-block kernel against
the per-tap kernels of session 8 (``FOVEAL_LKA_ROWS*`` switches), autocast bf16.

    python benchmarks/probe/probe22.py

Ran at 4af2bf1; the ``FOVEAL_LKA_*`` switches it toggles (module globals of ``ops.lka.kernels``)
were removed when the row-block kernels became the only path, so run it in a checkout of that
commit.
"""
import torch

import ops
import ops.lka.kernels as L

from lka_case import BENCH, VAN, us  # the script's folder is on sys.path

BASE = L._rows_config
VARIANTS = {"R4": 4, "R12": 12}



def wgrad_row(b, c, s):
    x, g = (torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
            for _ in range(2))
    cells, diff = [], 0.0
    for k, d in ((5, 1), (7, 3)):
        L._ROWS_WGRAD = False
        ref = L.dw_conv_weight_grad(g, x, (k, k), d)
        cells.append(us(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
        L._ROWS_WGRAD = True
        new = L.dw_conv_weight_grad(g, x, (k, k), d)
        diff = max(diff, max(((a - r).abs().max() / r.abs().max()).item() for a, r in zip(new, ref)))
        cells.append(us(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
        for rmax in VARIANTS.values():
            L._rows_config = lambda c, h, w, dil, max_rows=8, rmax=rmax, **kw: BASE(c, h, w, dil, rmax, **kw)
            cells.append(us(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
            L._rows_config = BASE
    return cells, diff


def chain_row(b, c, s):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, c, s, s, device="cuda", dtype=torch.bfloat16, generator=g).to(memory_format=torch.channels_last)
    shapes = [(c, 1, 5, 5), (c,), (c, 1, 7, 7), (c,), (c, c, 1, 1), (c,)]
    ws = [(torch.randn(*sh, device="cuda", generator=g) * sc).requires_grad_()
          for sh, sc in zip(shapes, [0.2, 1, 0.15, 1, c ** -0.5, 1])]
    xg = x.detach().clone().requires_grad_()
    go = torch.randn_like(x)
    cells, grads = [], []
    for on in (False, True):
        L._ROWS = L._SPLIT_PW = L._ROWS_WGRAD = on

        def fb():
            for t in (xg, *ws):
                t.grad = None
            with torch.autocast("cuda", torch.bfloat16):
                ops.large_kernel_attention(xg, *ws).backward(go)
        fb()
        grads.append([t.grad.float().clone() for t in (xg, *ws)])
        cells.append(us(fb))
    diff = max(((a - r).abs().max() / r.abs().max()).item() for a, r in zip(*grads))
    return cells, diff


def main():
    torch.manual_seed(0)
    print("== depthwise weight gradient, us (5x5 d1 | 7x7 d3): per-tap  rows  " + "  ".join(VARIANTS))
    for b, c, s in BENCH + VAN:
        cells, diff = wgrad_row(b, c, s)
        n = len(cells) // 2
        print(f"B{b} C{c} {s}x{s}".ljust(16) + " | ".join(" ".join(f"{v:6.0f}" for v in cells[i:i + n])
                                                   for i in (0, n)) + f" | max rel diff {diff:.1e}", flush=True)
    print("== LKA chain fwd+bwd (autocast bf16, channels-last), us: session 8 kernels | row-block kernels")
    for b, c, s in BENCH + VAN:
        cells, diff = chain_row(b, c, s)
        print(f"B{b} C{c} {s}x{s}".ljust(16) + f"{cells[0]:7.0f} {cells[1]:7.0f}  {cells[0] / cells[1]:.2f}x"
              + f" | max rel grad diff {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
