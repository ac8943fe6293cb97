"""Probe (session 38): 32-key boxes for 3-D NA forwards. probe89's grid ran NA-3D video's forward
with (2, 8, 4) query boxes and (8, 2, 2) key boxes (walk 1.788x the needed products) in 3416 us
against 3603 for the plan's (4, 8, 2) x (2, 2, 16) (1.869x): 32-key boxes, which ``_plan`` gives
only to 1-D/2-D windows under 512 keys (session 17 measured NA-3D video 10% slower with them,
before the TMA walks). This times, per shape, the plan's boxes against the two 32-key boxes with
the fewest products (both when tied; ``tiling.rank_boxes``), forward only (the backward keeps
its own boxes), bf16, medians of 3 do_bench runs, outputs compared with the plan's.

    python benchmarks/probe/probe90.py          # forward: plan vs 32-key boxes
    python benchmarks/probe/probe90.py ties     # forward: every 32-key box tied at the fewest products
    python benchmarks/probe/probe90.py dq       # forward+backward: ops vs a copy whose dQ kernel
                                                # takes 32-key boxes on 3-D head-dim-128 problems

``dq``: the dQ walk is the forward's walk (same boxes, same products), so the same boxes may help it;
the copy is this tree's ops with ``_plan``'s dQ option edited (``ab.load_base``), alternating medians
of 5 do_bench runs, gradients compared.
"""
import math
import statistics
from pathlib import Path

import torch
from triton.testing import do_bench

import sys

import ops
import ops.neighborhood.kernels as K
import ops.neighborhood.tiling as tiling

# (name, q shape [B, *spatial, H, D], kernel, causal)
CASES = [("NA-3D video 20x48x80 k7x15x15", (1, 20, 48, 80, 12, 128), (7, 15, 15), None),
         ("3-D 16x32x32 k3x7x7 B2 H16", (2, 16, 32, 32, 16, 128), (3, 7, 7), None),
         ("3-D 16x32x32 k5x9x9 B2 H16", (2, 16, 32, 32, 16, 128), (5, 9, 9), None),
         ("3-D 8x64x64 k3x13x13 H16", (1, 8, 64, 64, 16, 128), (3, 13, 13), None),
         ("3-D 30x45x80 k9x9x9 H12", (1, 30, 45, 80, 12, 128), (9, 9, 9), None),
         ("3-D 13x30x52 k5x11x11 H24", (1, 13, 30, 52, 24, 128), (5, 11, 11), None),
         ("3-D 20x48x80 k3x7x7 H12", (1, 20, 48, 80, 12, 128), (3, 7, 7), None),
         ("3-D 21x30x52 k21x7x7 H12", (1, 21, 30, 52, 12, 128), (21, 7, 7), None),
         ("3-D 16x32x32 k5x9x9 causal t B2 H16", (2, 16, 32, 32, 16, 128), (5, 9, 9), (True, False, False)),
         ("3-D video D64 H24 (plan: 64 keys)", (1, 20, 48, 80, 24, 64), (7, 15, 15), None),
         ("2-D 64x64 k33 B2 H16 (control)", (2, 64, 64, 16, 128), (33, 33), None),
         ("2-D 32x32 k31 B8 H8 (control)", (8, 32, 32, 8, 128), (31, 31), None)]


def main():
    print("case | boxes | walk | us (median of 3) | vs plan | max diff", flush=True)
    for name, shape, ks, causal in CASES:
        n = len(ks)
        causal = causal or (False,) * n
        args = (ks, (1,) * n, (1,) * n, causal)
        plan = K._plan(shape[1:-2], n, *args, shape[-1], "fwd")
        window = K._padded_window(ks, (1,) * n, causal, n)
        ranked = tiling.rank_boxes(plan[2], *window, 64, 32)
        best = [(bm, bn) for c, bm, bn in ranked if c <= ranked[1][0]][:4]
        need = math.prod(shape[1:-2]) * math.prod(ks)   # upper bound at the borders; ratios only
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        ref, base = None, None
        for boxes in [None, *[b for b in best if b != tuple(plan[3:5])]]:
            fn = lambda: K.na_forward(q, k, v, *args, shape[-1] ** -0.5, boxes=boxes)[0]  # noqa: E731
            out = fn().clone()
            ref = out if ref is None else ref
            diff = (out.float() - ref.float()).abs().max().item()
            us = 1e3 * statistics.median(do_bench(fn, warmup=10, rep=100) for _ in range(3))
            base = us if base is None else base
            bm, bn = boxes or plan[3:5]
            walk = K.walk_products(plan[2], *window, bm, bn) / need
            print(f"{name} | {bm} {bn}{' plan' if boxes is None else ''} | {walk:.3f} | {us:.1f} | "
                  f"{us / base:.3f} | {diff:.2g}", flush=True)


# (name, q shape, kernel): video-DiT-sized 3-D problems at head dim 128 for ``ties``
TIES = [("NA-3D video 20x48x80 k7x15x15", (1, 20, 48, 80, 12, 128), (7, 15, 15)),
        ("Wan 480p 21x30x52 k7x15x15", (1, 21, 30, 52, 12, 128), (7, 15, 15)),
        ("Wan 720p 21x45x80 k5x11x11", (1, 21, 45, 80, 12, 128), (5, 11, 11)),
        ("Hunyuan 33x45x80 k9x9x9", (1, 33, 45, 80, 12, 128), (9, 9, 9)),
        ("CogVideoX 13x30x45 k5x9x9 H24", (1, 13, 30, 45, 24, 128), (5, 9, 9)),
        ("16x32x32 k5x9x9 B2 H16", (2, 16, 32, 32, 16, 128), (5, 9, 9)),
        ("16x32x32 k3x7x7 B2 H16", (2, 16, 32, 32, 16, 128), (3, 7, 7)),
        ("8x64x64 k3x13x13 H16", (1, 8, 64, 64, 16, 128), (3, 13, 13))]


def ties():
    """The 32-key box pairs within 1.5% of the fewest products (up to 4), ``choose_boxes``' pick
    first, with their products relative to it: does a
    tie-break rule pick the fastest (NA-3D video: (2,8,4) x (8,2,2) 2.3% faster than the pick)?"""
    print("case | boxes, products vs the pick's | us (median of 5 alternations) | vs pick | max diff", flush=True)
    for name, shape, ks in TIES:
        args = (ks, (1, 1, 1), (1, 1, 1), (False,) * 3)
        plan = K._plan(shape[1:-2], 3, *args, shape[-1], "fwd")
        ranked = tiling.rank_boxes(plan[2], *K._padded_window(ks, (1, 1, 1), (False,) * 3, 3), 64, 32)
        tied = [(bm, bn) for c, bm, bn in ranked if c <= 1.015 * ranked[0][0]][:4]
        if len(tied) < 2:
            print(f"{name} | one box within 1.5% of the fewest products: {tied[0]}", flush=True)
            continue
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        fns = [lambda b=b: K.na_forward(q, k, v, *args, shape[-1] ** -0.5, boxes=b)[0] for b in tied]
        outs = [f().clone() for f in fns]
        times = [[] for _ in fns]
        for _ in range(5):
            for t, f in zip(times, fns):
                t.append(do_bench(f, warmup=10, rep=60))
        med = [1e3 * statistics.median(t) for t in times]
        for b, m, o in zip(tied, med, outs):
            cost = tiling.walk_products(plan[2], *K._padded_window(ks, (1, 1, 1), (False,) * 3, 3), *b)
            print(f"{name} | {b[0]} {b[1]} products {cost / ranked[0][0]:.3f} | {m:.1f} | {m / med[0]:.3f} | "
                  f"{(o.float() - outs[0].float()).abs().max().item():.2g}", flush=True)


DQ_EDIT = {"neighborhood/kernels.py": {
    "        options = [(64, 64)] if head_dim <= 128 else [(64, 32)]":
    "        options = [(64, 32 if shape[0] > 1 and head_dim > 64 else 64)] if head_dim <= 128 else [(64, 32)]"}}


def dq():
    from ab import alternating_medians, load_base  # the script's folder is on sys.path
    other = load_base(str(Path(ops.__file__).parent), DQ_EDIT)
    print("case | forward+backward ms ops, 32-key dQ copy (medians of 5 alternations) | copy/ops | grads equal")
    for name, shape, ks, causal in CASES:
        if len(ks) != 3 or shape[-1] <= 64:
            continue
        causal = causal or (False,) * 3
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, go = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        q, k, v = (t.requires_grad_() for t in (q, k, v))

        def run(op):
            out = op(q, k, v, kernel_size=ks, is_causal=causal)
            return torch.autograd.grad(out, (q, k, v), go)
        fa = lambda: run(ops.neighborhood_attention)  # noqa: E731
        fb = lambda: run(other.neighborhood_attention)  # noqa: E731
        ga, gb = fa(), fb()
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(ga, gb))
        ma, mb = alternating_medians(fa, fb)
        print(f"{name} | {ma:.4f}, {mb:.4f} | {mb / ma:.3f} | max diff {diff:.2g}", flush=True)


if __name__ == "__main__":
    {"dq": dq, "ties": ties}.get(sys.argv[1] if sys.argv[1:] else "", main)()
