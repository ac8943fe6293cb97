"""Probe (session 2, part 5): is BRA's backward body slower on the autograd device thread than on
the main thread? Times the same function both ways (CPU time per call, GPU queue not waited on)."""
import time
import torch
import ops
import ops.common.block_sparse as bs
from ops.routing.kernels import region_topk

from bra_case import C, fb, go, k, nw, q, topk, v  # the script's folder is on sys.path

spent = {"autograd thread": 0.0, "calls": 0}
orig = bs.block_sparse_attention_backward


def timed(*a, **kw):
    t = time.perf_counter()
    r = orig(*a, **kw)
    spent["autograd thread"] += time.perf_counter() - t
    spent["calls"] += 1
    return r


bs.block_sparse_attention_backward = timed

for _ in range(5):
    fb()
torch.cuda.synchronize()
spent.update({"autograd thread": 0.0, "calls": 0})
t0 = time.perf_counter()
for _ in range(20):
    fb()
total = (time.perf_counter() - t0) / 20
torch.cuda.synchronize()
print(f"fwd+bwd CPU per call {total * 1e3:.3f} ms; block_sparse_attention_backward on the autograd thread "
      f"{spent['autograd thread'] / spent['calls'] * 1e3:.3f} ms/call")
idx = region_topk(q, k, (nw, nw), topk, C ** -0.5)
out, lse = bs.block_sparse_attention_forward(q, k, v, idx, (8, 8), 2, C ** -0.5)
for _ in range(5):
    orig(go, q, k, v, out, lse, idx, (8, 8), 2, C ** -0.5)
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(20):
    orig(go, q, k, v, out, lse, idx, (8, 8), 2, C ** -0.5)
print(f"block_sparse_attention_backward on the main thread {(time.perf_counter() - t0) / 20 * 1e3:.3f} ms/call")
torch.cuda.synchronize()
with torch.no_grad():
    t0 = time.perf_counter()
    for _ in range(20):
        ops.routing_attention(q, k, v, nw, topk, scale=C ** -0.5, num_heads=C // 32)
    print(f"forward only (no grad) CPU per call {(time.perf_counter() - t0) / 20 * 1e3:.3f} ms")

# Where the backward's Python time goes, per function, on every thread (Python >= 3.12 can hook the
# autograd device thread's existing thread state): inclusive time per function, top 25.
import collections  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

if hasattr(threading, "setprofile_all_threads"):
    totals, stacks = collections.Counter(), collections.defaultdict(list)

    def tracer(frame, event, arg):
        tid = threading.get_ident()
        if event in ("call", "c_call"):
            name = f"{frame.f_code.co_filename.split('/')[-1]}:{frame.f_code.co_name}" if event == "call" else \
                f"C:{getattr(arg, '__qualname__', arg)}"
            stacks[tid].append((name, time.perf_counter()))
        elif event in ("return", "c_return", "c_exception") and stacks[tid]:
            name, t = stacks[tid].pop()
            totals[(tid == main_tid, name)] += time.perf_counter() - t

    main_tid = threading.get_ident()
    threading.setprofile_all_threads(tracer)
    for _ in range(20):
        fb()
    torch.cuda.synchronize()
    threading.setprofile_all_threads(None)
    sys.setprofile(None)
    for main in (False, True):
        print(f"-- {'main' if main else 'autograd'} thread, inclusive ms per fwd+bwd call (traced, inflated)")
        rows = sorted(((t, name) for (m, name), t in totals.items() if m == main), reverse=True)[:25]
        for t, name in rows:
            print(f"   {t / 20 * 1e3:8.3f}  {name}")
else:
    print("Python < 3.12: no per-thread trace")
