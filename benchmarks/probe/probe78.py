"""Probe (session 32): the depthwise kernels' bf16 loads converted two elements at a time.

Offline sm_90 SASS (``sm90_registers.py``'s compiler) showed the row-block conv's column loop
spending 1.5 instructions per loaded bf16 element on its conversion to fp32 (a byte permute and a
shift for the upper half of each 32-bit pair, a shift for the lower) and 3 per weight tap (a
2-byte load, zero fill for the channel mask, a shift): 505 instructions for 240 FMAs on the 5x5
(B64 C64 56x56). ``_to_f32`` now converts a pair with one shift and one mask (inline PTX), and
channel masks go when the channel blocks tile C (``EVEN_C``): 455 instructions and 150 registers
instead of 188 (7x7 dilation 3: 581 -> 518). The weight gradient takes the same conversion.

This times this tree's kernels against another copy of ``ops`` (``BASE``, the commit before) in
one process, alternating, bf16 channels-last, and checks their outputs are equal:
- ``convs``: the 5x5 and the 7x7 dilation 3 forward, the flipped 7x7 with a residual (the input
  gradient) and both weight gradients, on the bench's and VAN's shapes;
- ``variants``: the conv forward and input gradient at each (``PACKED``, ``EVEN_C``) of this tree
  against the base copy's (the first run measured the pair 0.6-0.8x on the 5x5 over 56x56 and
  128x128 maps and 1.1-1.2x on the 7x7 dilation 3 over 28x28; weights read [taps, C] in fp32 were
  no faster, 0.6-1.1x, and are gone);
- ``lka``: ``ops.large_kernel_attention`` forward and forward+backward, replayed from CUDA graphs,
  channels-last (and NCHW forwards on the bench's shapes). This also takes in the session's two
  other changes: the one-launch gate backward on maps of at most 64 channels and the NCHW path's
  output written by the gate (probe77).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe78.py BASE [convs] [variants] [lka]
    (BASE: git archive <commit> ops | tar -x -C <folder>; pass <folder>/ops)
"""
import importlib
import statistics
import sys

import torch

import ops
from ab import load_base
from lka_case import BENCH, VAN, lka_params, us
from ops.lka.kernels import _dw_rows, dw_conv, dw_conv_weight_grad, dw_launch


def rounds_of(arms: dict, rounds: int = 5) -> dict:
    """{arm: median us} over ``rounds`` alternations of the arms."""
    times = {k: [] for k in arms}
    for _ in range(rounds):
        for k, fn in arms.items():
            times[k].append(us(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def cases():
    """(label, batch, channels, size, kernel, dilation): the LKA's two convs on every shape."""
    for b, c, sz in BENCH + VAN:
        for k, d in ((5, 1), (7, 3)):
            yield f"B{b} C{c} {sz}x{sz} {k}x{k} d{d}", b, c, sz, k, d


def convs(base) -> None:
    bk = importlib.import_module(base.__name__ + ".lka.kernels")
    for label, b, c, sz, k, d in cases():
        x, g, r = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
                   .contiguous(memory_format=torch.channels_last) for _ in range(3))
        w = torch.randn(c, 1, k, k, device="cuda") * 0.2
        bias = torch.randn(c, device="cuda")
        y0, y1 = torch.empty_like(x), torch.empty_like(x)
        arms = {
            "fwd": (lambda: bk.dw_conv(x, w, bias, d, out=y0), lambda: dw_conv(x, w, bias, d, out=y1)),
            "dx": (lambda: bk.dw_conv(g, w, None, d, flip=True, residual=r, out=y0),
                   lambda: dw_conv(g, w, None, d, flip=True, residual=r, out=y1)),
            "wgrad": (lambda: bk.dw_conv_weight_grad(g, x, (k, k), d), lambda: dw_conv_weight_grad(g, x, (k, k), d)),
        }
        parts = []
        for name, (fb, fn) in arms.items():
            ob, on = fb(), fn()
            if name == "wgrad":
                err = max((a - b_).abs().max().item() for a, b_ in zip(ob, on))
            else:
                err = (y0.float() - y1.float()).abs().max().item()
            t = rounds_of({"base": fb, "this": fn})
            parts.append(f"{name} {t['base']:.1f} -> {t['this']:.1f} ({t['base'] / t['this']:.2f}x, diff {err:.1e})")
        print(f"{label}: " + "; ".join(parts), flush=True)


def variants(base) -> None:
    """This tree's conv at each (PACKED, EVEN_C) against the base copy's, forward and flipped with
    a residual (the input gradient)."""
    bk = importlib.import_module(base.__name__ + ".lka.kernels")
    combos = [(False, False), (False, True), (True, False), (True, True)]
    for label, b, c, sz, k, d in cases():
        x, r = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
                .contiguous(memory_format=torch.channels_last) for _ in range(2))
        w = torch.randn(c, 1, k, k, device="cuda") * 0.2
        bias = torch.randn(c, device="cuda")
        ys = [torch.empty_like(x) for _ in range(len(combos) + 1)]
        parts = []
        for flip in (False, True):
            bias_, res = (None, r) if flip else (bias, None)
            grid, scalars, meta = dw_launch(tuple(x.shape), x.dtype, (k, k), d, flip, not flip, flip,
                                            (x.stride(),) * 3)
            arms = {"base": lambda: bk.dw_conv(x, w, bias_, d, flip=flip, residual=res, out=ys[0])}
            for i, (packed, even) in enumerate(combos):
                def fn(i=i, m={**meta, "PACKED": packed, "EVEN_C": even}):
                    _dw_rows[grid](x, w, bias if bias_ is not None else w, r if flip else ys[i + 1], ys[i + 1],
                                   *scalars, **m)
                arms[f"p{int(packed)}e{int(even)}"] = fn
            for fn in arms.values():
                fn()
            err = max((y.float() - ys[0].float()).abs().max().item() for y in ys[1:])
            t = rounds_of(arms)
            parts.append(("dx" if flip else "fwd") + " " + " ".join(f"{a} {v:.1f}" for a, v in t.items())
                         + f" (diff {err:.0e})")
        print(f"{label}: " + "; ".join(parts), flush=True)


def graphed(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def lka(base) -> None:
    torch.manual_seed(0)
    for b, c, sz in BENCH:
        x = torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
        p = lka_params(c)
        ref = ops.large_kernel_attention(x, *p).float()
        err = (base.large_kernel_attention(x, *p).float() - ref).abs().max().item()
        t = rounds_of({k: graphed(lambda mod=mod: mod.large_kernel_attention(x, *p))
                       for k, mod in (("base", base), ("this", ops))})
        print(f"LKA NCHW B{b} C{c} {sz}x{sz}, CUDA graphs, us: fwd {t['base']:.1f} -> {t['this']:.1f} "
              f"({t['base'] / t['this']:.2f}x), diff {err:.1e}", flush=True)
    lka_channels_last(base, [(b, c, sz, sz) for b, c, sz in BENCH + VAN[4:]])


def lka_channels_last(base, shapes) -> None:
    """The channels-last LKA forward and forward+backward of ``base`` and this tree under CUDA
    graphs on [B, C, H, W] ``shapes``."""
    for b, c, h, w in shapes:
        x = torch.randn(b, c, h, w, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        p = [t.requires_grad_() for t in lka_params(c)]
        xg = x.detach().clone().requires_grad_()
        g = torch.randn_like(x)
        row = {}
        for name, mod in (("base", base), ("this", ops)):
            def fwd(mod=mod):
                with torch.no_grad():
                    mod.large_kernel_attention(x, *p)

            def fwd_bwd(mod=mod):
                torch.autograd.grad(mod.large_kernel_attention(xg, *p), [xg, *p], g)
            row[name] = (graphed(fwd), graphed(fwd_bwd))
        ref = ops.large_kernel_attention(x, *p)
        err = (base.large_kernel_attention(x, *p).float() - ref.float()).abs().max().item()
        t = rounds_of({f"{k} {i}": fns[i] for k, fns in row.items() for i in (0, 1)})
        print(f"LKA B{b} C{c} {h}x{w}, CUDA graphs, us: fwd {t['base 0']:.1f} -> {t['this 0']:.1f} "
              f"({t['base 0'] / t['this 0']:.2f}x), fwd+bwd {t['base 1']:.1f} -> {t['this 1']:.1f} "
              f"({t['base 1'] / t['this 1']:.2f}x), fwd diff {err:.1e}", flush=True)


if __name__ == "__main__":
    base = load_base(sys.argv[1])
    parts = sys.argv[2:] or ["convs", "variants", "lka"]
    if "convs" in parts:
        convs(base)
    if "variants" in parts:
        variants(base)
    if "lka" in parts:
        lka(base)
