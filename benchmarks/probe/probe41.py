"""Probe (session 15, no GPU needed): registers, spills and SASS size of the block-sparse (BRA)
kernels, this tree's ``ops`` against another copy, compiled offline for sm_90 as probe40 does,
on two bench problems (B64 28x28 C128 top-4: 16-token tiles packed 4 per block; B8 128x128 C64
top-4: 256-token tiles), one streaming config each (64-row blocks, 4 warps, 2 stages).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe41.py /tmp/base/ops
"""
import importlib
import sys

import torch

import ops
from ops.common.tuning import contiguous_strides
from ab import load_base
from probe40 import compile_report

# (name, B, Y, X, C, heads, regions, topk)
CASES = [("B64 28x28 C128 topk4", 64, 28, 28, 128, 4, (7, 7), 4), ("B8 128x128 C64 topk4", 8, 128, 128, 64, 2, (8, 8), 4)]


def kernels(mod, case):
    """(label, jit fn, argument values, warps) of the forward, dQ and dK/dV launches."""
    bs = importlib.import_module(mod.__name__ + ".common.block_sparse")
    _, B, Y, X, C, heads, regions, nk = case
    R = regions[0] * regions[1]
    tile = (Y // regions[0], X // regions[1])
    dense, lse, idx = contiguous_strides((B, Y, X, C)), contiguous_strides((B, Y, X, heads)), contiguous_strides((B, R, nk))[:2]
    fwd = bs.forward_launch(0, B, Y, X, C, tile, R, nk, heads, torch.bfloat16, C ** -0.5,
                            (*dense, *dense, *dense, *dense, *lse, *idx), (0,))
    dq, dkv, _ = bs.backward_launches(0, B, Y, X, C, tile, R, nk, heads, torch.bfloat16, C ** -0.5,
                                      (dense,) * 8 + (lse, idx), (0,))
    out = []
    for label, bound, ptrs, tuned in (("forward", fwd, ("*bf16",) * 4 + ("*fp32", "*i32"), "BLOCK_N"),
                                      ("dQ", dq, ("*bf16",) * 6 + ("*fp32",) * 3 + ("*i32",), "BLOCK_N"),
                                      ("dK/dV", dkv, ("*bf16",) * 6 + ("*fp32",) * 2, "BLOCK_M")):
        fn = bound.launcher.fn
        vals = dict(zip(fn.arg_names, ptrs + tuple(bound.scalars)))
        vals.update(bound.meta)
        vals[tuned] = 64
        vals.pop("num_warps", None)
        out.append((label, fn, vals))
    return out


def main():
    base = load_base(sys.argv[1])
    for case in CASES:
        print(f"== {case[0]}")
        for who, mod in (("base", base), ("this", ops)):
            for label, fn, vals in kernels(mod, case):
                compile_report(f"{who} {label}", fn, vals, 4, 2)


if __name__ == "__main__":
    main()
