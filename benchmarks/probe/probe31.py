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
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import ops
from tasks.bench.suites.peers import CUDAGraphed

from bra_case import SHAPES, cpu_ms, fwd_bwd  # the script's folder is on sys.path


class Noop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return torch.empty_like(q)

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def main():
    x = torch.randn(64, device="cuda", requires_grad=True)
    print(f"host: trivial backward {cpu_ms(lambda: (x * 1.0).sum().backward(), 1000) * 1e3:.0f} us", flush=True)
    for B, S, C, nw, topk in SHAPES:
        call, (q, k, v, go), leaves = fwd_bwd(B, S, C, nw, topk)

        def floor():
            for t in leaves:
                t.grad = None
            Noop.apply(*leaves).backward(go)

        def fwd_only():
            ops.routing_attention(*leaves, nw, topk, scale=C ** -0.5, num_heads=C // 32)

        host = [cpu_ms(f, 200) * 1e3 for f in (call, fwd_only, floor)]
        graph = CUDAGraphed(call)
        times = [(do_bench(call, warmup=10, rep=60), do_bench(graph, warmup=10, rep=60)) for _ in range(2)]
        print(f"B{B} {S}x{S} C{C} topk{topk}: CPU us/call fwd+bwd {host[0]:.0f}, fwd (grad) {host[1]:.0f}, "
              f"no-op Function fwd+bwd {host[2]:.0f} | eager/graph ms "
              + ", ".join(f"{e:.3f}/{g:.3f}" for e, g in times), flush=True)
        for _ in range(5):
            call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                call()
            torch.cuda.synchronize()
        kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda e: e.time_range.start)
        per = {}
        for e in kernels:
            n, t = per.get(e.name, (0, 0.0))
            per[e.name] = (n + 1, t + e.time_range.elapsed_us())
        for name, (n, t) in per.items():
            print(f"    {n:3d} x {t / n:7.1f} us  {name[:80]}")
        n_per = len(kernels) // 20
        spans = [(kernels[i + n_per - 1].time_range.end - kernels[i].time_range.start,
                  sum(e.time_range.elapsed_us() for e in kernels[i:i + n_per]))
                 for i in range(n_per * 10, len(kernels) - n_per + 1, n_per)]
        if spans:
            span = sum(s for s, _ in spans) / len(spans)
            busy = sum(b for _, b in spans) / len(spans)
            print(f"    one call on the GPU: span {span:.1f} us, busy {busy:.1f} us, idle {span - busy:.1f} us")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40),
              flush=True)


if __name__ == "__main__":
    main()
