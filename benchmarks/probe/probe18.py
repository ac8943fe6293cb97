"""Probe (session 8): host cost of eager BRA calls per bench shape, and which launches miss the
direct path. Session 8's bench had the 28x28 C128 top-4 forward at 0.146 ms eager against 0.094 ms
replayed from a CUDA graph, while the other shapes' eager rows equal their graphs.

Per shape: CPU time per call with launches not waited for (forward without gradients, forward
and backward), and per launcher the calls that went through Triton's jit path instead of the
compiled kernel (``Launcher`` counts them: after warm-up each should be 0).

    python benchmarks/probe/probe18.py
"""
import torch

import ops
import ops.common.block_sparse as bs
import ops.routing.kernels as rk
from ops.common.tuning import Launcher

from bra_case import SHAPES, cpu_ms, fwd_bwd  # the script's folder is on sys.path

LAUNCHERS = {"region_mean": rk._region_mean, "region_topk": rk._region_topk, "bs_fwd": bs._bs_fwd,
             "bs_bwd_dq": bs._bs_bwd_dq, "bs_bwd_dkv": bs._bs_bwd_dkv}
slow = {}
_resolve = Launcher._resolve


def counting_resolve(self, key, grid, args, kwargs, config, launch):
    slow[id(self)] = slow.get(id(self), 0) + 1
    return _resolve(self, key, grid, args, kwargs, config, launch)


Launcher._resolve = counting_resolve
for B, S, C, nw, topk in SHAPES:
    fb, (q, k, v, go), _ = fwd_bwd(B, S, C, nw, topk)
    fwd = lambda: ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32)  # noqa: E731
    for _ in range(3):
        fwd(), fb()
    torch.cuda.synchronize()
    slow.clear()
    f_ms, fb_ms = cpu_ms(fwd, 200), cpu_ms(fb, 100)
    per = " ".join(f"{n} {slow.get(id(lz), 0)}" for n, lz in LAUNCHERS.items())
    entries = " ".join(f"{n} {len(lz.compiled)}" for n, lz in LAUNCHERS.items())
    print(f"B{B} {S}x{S} C{C} topk{topk}: host us/call fwd {f_ms * 1e3:.1f}, fwd+bwd {fb_ms * 1e3:.1f} | "
          f"jit-path launches after warm-up: {per} | compiled entries: {entries}", flush=True)
