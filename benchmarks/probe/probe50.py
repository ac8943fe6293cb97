"""Probe (session 20): the host's cost of one direct Triton launch, by argument count, and of
each of eager BRA's five bound launches and its allocations.

probe49 put an eager BRA forward+backward at ~190 us of CPU above a do-nothing
``autograd.Function`` on the H200 hosts, against ~41 us on a local CPU with the launches stubbed
out. This times (median CPU us per call, GPU idle before each, 300 calls):
- a do-nothing kernel launched through ``Launcher.bind`` (the direct path) with 1 pointer and
  0, 8, 24 or 48 int arguments;
- each bound launch of the B64 28x28 C128 topk4 program with preallocated buffers;
- ``torch.empty`` on the device (small and the [3, B, Y, X, C] gradient buffer).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe50.py
"""
import statistics

import torch
import triton

from bra_case import SHAPES, fwd_bwd
from ops.common.tuning import Launcher
from ops.routing.eager import program_for
from tasks.bench.runner import _issue_ms

def issue_us(fn, n: int = 300) -> float:
    """Median CPU us of one call issued on an idle GPU (the bench's "CPU ms"), after 10 warm-ups."""
    for _ in range(10):
        fn()
    return _issue_ms(fn, n) * 1e3


def _kernel_with(n_ints: int):
    params = ", ".join(["X"] + [f"a{i}" for i in range(n_ints)])
    body = "    pid = tl.program_id(0)\n    if pid < 0:\n        tl.store(X, " + \
        (" + ".join([f"a{i}" for i in range(n_ints)]) or "0") + ")\n"
    src = f"def noop_{n_ints}({params}):\n{body}"
    path = f"/tmp/probe50_noop_{n_ints}.py"
    with open(path, "w") as f:
        f.write("import triton.language as tl\n" + src)
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"noop_{n_ints}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return triton.jit(getattr(mod, f"noop_{n_ints}"))


def main():
    x = torch.zeros(16, device="cuda", dtype=torch.int64)
    print("direct launch of a do-nothing kernel, CPU us per call:")
    for n in (0, 8, 24, 48):
        launcher = Launcher(_kernel_with(n))
        ints = tuple(range(3, 3 + n))   # not 1, not multiples of 16: runtime ints
        bound = launcher.bind(("noop", n), (1,), ints, {})
        bound(x)
        torch.cuda.synchronize()
        print(f"  1 pointer + {n:2d} ints: {issue_us(lambda: bound(x)):6.1f} us  (direct: {bound.direct is not None})")

    B, S, C, nw, topk = SHAPES[1]
    call, (q, k, v, go), leaves = fwd_bwd(B, S, C, nw, topk)
    for _ in range(5):
        call()
    heads, scale = C // 32, C ** -0.5
    prog = program_for(*leaves, (nw, nw), topk, heads, scale)
    idx = prog.route(q, k)
    out, lse = prog.forward(q, k, v, idx)
    means = torch.empty(prog.means_shape, device="cuda", dtype=torch.float32)
    idx2 = torch.empty(prog.idx_shape, device="cuda", dtype=torch.int32)
    out2, lse2 = torch.empty_like(out), torch.empty_like(lse)
    dq, dk, dv = (torch.empty_like(q) for _ in range(3))
    ws = torch.empty(prog.ws_numel, device="cuda", dtype=torch.float32)
    print(f"B{B} {S}x{S} C{C} topk{topk}, CPU us per bound launch (preallocated buffers):")
    pieces = {
        "mean": lambda: prog.mean(q, k, means),
        "rank": lambda: prog.rank(means, idx2),
        "fwd": lambda: prog.fwd(q, k, v, out2, lse2, idx),
        "dq": lambda: prog.dq(q, k, v, out, go, dq, lse, ws, idx),
        "dkv": lambda: prog.dkv(q, k, v, go, dk, dv, ws),
        "empty small": lambda: torch.empty(prog.idx_shape, device="cuda", dtype=torch.int32),
        "empty [3,...]": lambda: torch.empty((3, *prog.shape), device="cuda", dtype=prog.dtype).unbind(0),
        "route (2 allocs + 2 launches)": lambda: prog.route(q, k),
        "forward (2 allocs + 1 launch)": lambda: prog.forward(q, k, v, idx),
        "backward body": lambda: prog.backward(go, q, k, v, out, lse, idx),
    }
    for name, fn in pieces.items():
        print(f"  {name:30s} {statistics.median(issue_us(fn) for _ in range(3)):6.1f} us", flush=True)


if __name__ == "__main__":
    main()
