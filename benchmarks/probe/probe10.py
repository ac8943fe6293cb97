"""Probe (session 4): GPU time per kernel of BRA's forward+backward on the four bench shapes.

Prints each kernel's device time per call (torch.profiler), so a change to one kernel can be
read apart from the host's launch cost. Usage: python benchmarks/probe/probe10.py
"""
from bra_case import SHAPES, fwd_bwd  # the script's folder is on sys.path
from profiling import kernel_times

for B, S, C, n_win, topk in SHAPES:
    rows = kernel_times(fwd_bwd(B, S, C, n_win, topk)[0])
    print(f"-- B{B} {S}x{S} C{C} topk{topk}: kernels {sum(r[0] for r in rows):.4f} ms per fwd+bwd", flush=True)
    for ms, count, name in rows:
        print(f"   {ms:7.4f} ms x{count:<2d} {name[:80]}", flush=True)
