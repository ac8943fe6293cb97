"""Probe (session 11): host cost A/B of BRA's eager forward+backward, this tree's ``ops`` against
another copy of ``ops`` (e.g. an earlier commit's) in the same process, so both meet the same
host. The other copy is loaded as package ``ops_base`` with its ``torch.library`` namespace
renamed (both register their custom ops).

Per bench shape, alternating base and this tree 5 times: CPU us per call (launches not waited
for) and do_bench eager ms of the forward+backward, with a do-nothing ``autograd.Function``'s
CPU time as the host-speed yardstick; medians.

    git worktree add /tmp/base <commit> && python benchmarks/probe/probe32.py /tmp/base/ops
"""
import statistics
import sys

import torch
from triton.testing import do_bench

import ops

from ab import load_base  # the script's folder is on sys.path
from bra_case import SHAPES, cpu_ms, fwd_bwd, noop_fwd_bwd


def main():
    base = load_base(sys.argv[1])
    print("shape                 | CPU us/call base, this (no-op Function) | eager ms base, this | grads equal")
    for shape in SHAPES:
        cb, _, lb = fwd_bwd(*shape, op=base.routing_attention)
        cn, (_, _, _, go), ln = fwd_bwd(*shape)
        fl = noop_fwd_bwd(ln, go)
        cb(), cn()
        same = all(torch.equal(a.grad, b.grad) for a, b in zip(lb, ln))
        if not same:   # say by how much, and whether the two copies' autotuners chose differently
            diffs = [f"{(a.grad.float() - b.grad.float()).abs().max().item():.2e}" for a, b in zip(lb, ln)]
            print("  grads differ (max abs dq, dk, dv):", *diffs)
            for name in ("_bs_fwd", "_bs_bwd_dq", "_bs_bwd_dkv"):
                picks = [sorted({str(c) for c in getattr(m.common.block_sparse, name).configs.values()})
                         for m in (base, ops)]
                print(f"  {name} configs base {picks[0]} this {picks[1]}")
        host = {"base": [], "this": [], "floor": []}
        eager = {"base": [], "this": []}
        for _ in range(5):
            for name, fn in (("base", cb), ("this", cn)):
                host[name].append(cpu_ms(fn, 100) * 1e3)
                eager[name].append(do_bench(fn, warmup=10, rep=60))
            host["floor"].append(cpu_ms(fl, 100) * 1e3)
        m = {k: statistics.median(v) for k, v in host.items()}
        e = {k: statistics.median(v) for k, v in eager.items()}
        B, S, C, nw, topk = shape
        print(f"B{B} {S}x{S} C{C} topk{topk}".ljust(22) + f"| {m['base']:6.0f} {m['this']:6.0f} ({m['floor']:4.0f})"
              f"                    | {e['base']:.3f} {e['this']:.3f}     | {same}", flush=True)


main()
