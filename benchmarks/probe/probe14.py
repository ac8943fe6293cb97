"""Probe (session 6): eager BRA forward+backward per call under three backward designs, timed
interleaved in one process so the host's drift hits all of them alike.

Variants are versions of ``ops/common/block_sparse.py`` given as files (loaded as sibling
modules of ``ops.common``); the op's backward imports ``block_sparse_attention_backward`` at
call time, so patching the attribute switches it. Per variant and shape: wall time per call of
100 back-to-back eager calls (host-bound calls show host time), median over rounds, and the
GPU time of one call replayed from a CUDA graph.
Usage: python benchmarks/probe/probe14.py NAME=FILE [NAME=FILE ...]
"""
import importlib.util
import statistics
import sys
import time

import torch
import triton

import ops.common.block_sparse as bs
from bra_case import SHAPES, fwd_bwd  # the script's folder is on sys.path

ORIGINAL = bs.block_sparse_attention_backward


def load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(f"ops.common.bs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.block_sparse_attention_backward


variants = {"current": ORIGINAL}
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    variants[name] = load(name, path)

for B, S, C, n_win, topk in SHAPES[:3]:   # the three host-bound shapes
    call, _, leaves = fwd_bwd(B, S, C, n_win, topk)
    walls, gpu = {n: [] for n in variants}, {}
    for name, fn in variants.items():   # compile/tune, check, GPU time
        bs.block_sparse_attention_backward = fn
        call()
        grads = [t.grad.clone() for t in leaves]
        bs.block_sparse_attention_backward = ORIGINAL
        call()
        same = all(torch.equal(a, t.grad) for a, t in zip(grads, leaves))
        bs.block_sparse_attention_backward = fn
        gpu[name] = (triton.testing.do_bench_cudagraph(call, rep=50), same)
    for _ in range(7):
        for name, fn in variants.items():
            bs.block_sparse_attention_backward = fn
            call()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(100):
                call()
            torch.cuda.synchronize()
            walls[name].append((time.perf_counter() - t0) * 10)  # ms per call
    bs.block_sparse_attention_backward = ORIGINAL
    print(f"-- B{B} {S}x{S} C{C} topk{topk}", flush=True)
    for name in variants:
        ms, same = gpu[name]
        print(f"   {name:12s} eager {statistics.median(walls[name]):.3f} ms/call "
              f"(min {min(walls[name]):.3f}, max {max(walls[name]):.3f}), graph {ms:.3f} ms, "
              f"grads equal to current: {same}", flush=True)
