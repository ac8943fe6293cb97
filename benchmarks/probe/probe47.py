"""Probe (session 19, no GPU needed): SASS size of the block-sparse (BRA) kernels' main loops (forward,
dQ, dK/dV) on the four ``bench bra`` shapes, this tree's ``ops`` against another copy, compiled offline
for sm_90 as ``probe40.compile_counts`` does (streamed block and warps as the autotuner offers them).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe47.py /tmp/base/ops
"""
import importlib
import sys

import torch

import ops
from ab import load_base
from tasks.bench.suites.bra import GPU_CASES as SHAPES, HEAD_DIM  # bench bra's four shapes
from probe40 import compile_counts


def values(mod, shape, kind):
    """(jit fn, argument values) of the ``kind`` (fwd, dq, dkv) launch of one bench shape, bf16,
    contiguous tensors."""
    bs = importlib.import_module(mod.__name__ + ".common.block_sparse")
    B, S, C, n_win, topk = shape
    heads, nq = C // HEAD_DIM, n_win * n_win
    dense = (S * S * C, S * C, C, 1)
    lse = (S * S * heads, S * heads, heads, 1)
    strides = (dense,) * 8 + (lse, (nq * topk, topk))
    tile = (S // n_win, S // n_win)
    if kind == "fwd":
        fwd_strides = (*dense, *dense, *dense, *dense, *lse, nq * topk, topk)
        launch = bs.forward_launch(0, B, S, S, C, tile, nq, topk, heads, torch.bfloat16, C ** -0.5, fwd_strides, (0,))
        fn = bs._bs_fwd_kernel.fn
    else:
        launch = bs.backward_launches(0, B, S, S, C, tile, nq, topk, heads, torch.bfloat16, C ** -0.5, strides,
                                      (0,))[kind == "dkv"]
        fn = (bs._bs_bwd_dkv_kernel if kind == "dkv" else bs._bs_bwd_dq_kernel).fn
    n_ptr = fn.arg_names.index("sq_b")
    ptrs = tuple("*fp32" if n in ("LSE", "GLSE", "WS") else "*i32" if n == "IDX" else "*bf16" for n in fn.arg_names[:n_ptr])
    vals = dict(zip(fn.arg_names, ptrs + launch.scalars))
    for name in ("sm_scale", "qk_scale"):
        if name in vals:
            vals[name] = float(vals[name])
    return fn, {**vals, **launch.meta}


def main():
    base = load_base(sys.argv[1])
    print("shape                kernel block w s  registers  spill B  SASS         main loop (base -> this)")
    for shape in SHAPES:
        for kind in ("fwd", "dq", "dkv"):
            (fb, vb), (ft, vt) = values(base, shape, kind), values(ops, shape, kind)
            streamed = "BLOCK_M" if kind == "dkv" else "BLOCK_N"
            for block, warps, stages in [(32, 2, 2), (64, 4, 2), (64, 4, 3), (128, 4, 2)]:
                b = compile_counts(fb, {**vb, streamed: block}, warps, stages)
                t = compile_counts(ft, {**vt, streamed: block}, warps, stages)
                print(f"{str(shape):20s} {kind:6s} {block:5d} {warps} {stages}  {b[0]:3d} -> {t[0]:3d}"
                      f"  {b[1]:3d} -> {t[1]:3d}  {b[2]:4d} -> {t[2]:4d}  {b[3]:4d} -> {t[3]:4d}"
                      f" ({(t[3] - b[3]) / max(b[3], 1):+.1%})", flush=True)


if __name__ == "__main__":
    main()
