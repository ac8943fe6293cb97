"""Probe (session 11): why BRA's eager forward+backward is slower than its GPU work, per bench
shape (session 8's bench: 0.455 / 0.648 / 0.578 ms eager against 0.225 / 0.219 / 0.298 ms from
CUDA graphs on the first three shapes, with one host path for all of them).

Per shape: CPU time per call (launches not waited for) of the forward+backward, of the forward
alone (with grad, its graph dropped) and of a do-nothing ``autograd.Function`` with the same
inputs and outputs (the autograd engine's floor on this host); do_bench eager vs CUDA graph,
interleaved twice; then a ``torch.profiler`` trace of 20 calls: kernels (count, mean GPU us),
the GPU span of one call and its idle part, and the CPU ops that take longest.

    python benchmarks/probe/probe31.py
"""
import torch
from triton.testing import do_bench

import ops
from tasks.bench.suites.peers import CUDAGraphed

from bra_case import SHAPES, cpu_ms, fwd_bwd, noop_fwd_bwd  # the script's folder is on sys.path
from profiling import print_kernel_trace


def main():
    x = torch.randn(64, device="cuda", requires_grad=True)
    print(f"host: trivial backward {cpu_ms(lambda: (x * 1.0).sum().backward(), 1000) * 1e3:.0f} us", flush=True)
    for B, S, C, nw, topk in SHAPES:
        call, (_, _, _, go), leaves = fwd_bwd(B, S, C, nw, topk)
        floor = noop_fwd_bwd(leaves, go)

        def fwd_only():
            ops.routing_attention(*leaves, nw, topk, scale=C ** -0.5, num_heads=C // 32)

        host = [cpu_ms(f, 200) * 1e3 for f in (call, fwd_only, floor)]
        graph = CUDAGraphed(call)
        times = [(do_bench(call, warmup=10, rep=60), do_bench(graph, warmup=10, rep=60)) for _ in range(2)]
        print(f"B{B} {S}x{S} C{C} topk{topk}: CPU us/call fwd+bwd {host[0]:.0f}, fwd (grad) {host[1]:.0f}, "
              f"no-op Function fwd+bwd {host[2]:.0f} | eager/graph ms "
              + ", ".join(f"{e:.3f}/{g:.3f}" for e, g in times), flush=True)
        print_kernel_trace(call, 20, cpu_rows=14, spans=True, name_width=80)


if __name__ == "__main__":
    main()
