"""probe65: neighborhood attention's walks with TMA box loads against pointer loads (H200, bf16).

1. A/B in one process, alternating rounds: the NA bench cases (BENCHMARKS.md's 2-D/3-D NA and GNA
   rows, and the 1-D bench's three) with ``ops.neighborhood.kernels.USE_TMA`` on and off; forward,
   and forward+backward. Both paths' outputs and gradients are compared (max abs difference).
2. Box sweep with TMA on: the forward (and forward+backward) with other (query box, key box)
   pairs than the cost model's, on NA-2D large, the backbone and NA-3D video; TMA loads have no
   per-row address registers, which may move the best box.

    python3 benchmarks/probe/probe65.py [--rounds 3] [--no-sweep]
"""
import sys

import torch
import triton.testing

import ops.neighborhood.kernels as K

ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3

# name, (batch, heads, head_dim), spatial, kernel, stride
CASES = [
    ("NA-2D large", (1, 24, 128), (96, 96), (17, 17), (1, 1)),
    ("NA-2D backbone", (64, 4, 32), (56, 56), (7, 7), (1, 1)),
    ("NA-3D video", (1, 12, 128), (20, 48, 80), (7, 15, 15), (1, 1, 1)),
    ("GNA-2D", (1, 24, 128), (96, 96), (16, 16), (8, 16)),
    ("GNA-3D", (1, 12, 128), (20, 48, 80), (8, 16, 16), (2, 8, 8)),
    ("NA-1D 32768 k2049", (1, 16, 128), (32768,), (2049,), (1,)),
    ("NA-1D 8192 k513", (4, 16, 64), (8192,), (513,), (1,)),
    ("NA-1D 4096 k257", (8, 8, 128), (4096,), (257,), (1,)),
]
# name -> (query box, key box) pairs over the padded axes, tried with TMA on (forward; the
# backward uses the same pair for dQ and dK/dV)
SWEEP = {
    "NA-2D large": [((1, 8, 8), (1, 8, 8)), ((1, 8, 8), (1, 4, 16)), ((1, 8, 8), (1, 8, 16)),
                    ((1, 4, 16), (1, 4, 16)), ((1, 8, 16), (1, 8, 16)), ((1, 8, 16), (1, 4, 8))],
    "NA-2D backbone": [((1, 8, 8), (1, 8, 8)), ((1, 4, 16), (1, 4, 16)), ((1, 4, 8), (1, 4, 8)),
                       ((1, 8, 8), (1, 4, 16))],
    "NA-3D video": [((2, 4, 8), (2, 4, 8)), ((4, 8, 2), (2, 4, 8)), ((2, 2, 16), (2, 2, 16)),
                    ((4, 8, 2), (1, 4, 16)), ((2, 8, 8), (2, 4, 16)), ((4, 8, 4), (2, 4, 16))],
}


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def inputs(case):
    _, (b, h, d), spatial, kernel, stride = case
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(b, *spatial, h, d, device="cuda", dtype=torch.bfloat16, generator=g)
                   for _ in range(4))
    win = (kernel, (1,) * len(spatial), stride, (False,) * len(spatial))
    return q, k, v, do, win, d ** -0.5


def run(q, k, v, do, win, scale, boxes=None, backward=True):
    out, lse = K.na_forward(q, k, v, *win, scale, boxes=boxes)
    if not backward:
        return (out,)
    return (out, *K.na_backward(do, None, q, k, v, out, lse, *win, scale, boxes=boxes))


def ab():
    print("== A/B: TMA box loads vs pointer loads (ms, median of rounds; diff = max |tma - pointers|)")
    for case in CASES:
        q, k, v, do, win, scale = inputs(case)
        res, times = {}, {(t, kind): [] for t in (True, False) for kind in ("fwd", "f+b")}
        for _ in range(ROUNDS):
            for tma in (True, False):
                K.USE_TMA = tma
                res[tma] = run(q, k, v, do, win, scale)
                times[(tma, "fwd")].append(bench(lambda: K.na_forward(q, k, v, *win, scale)))
                times[(tma, "f+b")].append(bench(lambda: run(q, k, v, do, win, scale)))
        K.USE_TMA = True
        med = {key: sorted(ts)[len(ts) // 2] for key, ts in times.items()}
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(res[True], res[False]))
        used = K._tma(q.get_device(), q.dtype, K._padded_shape(q.shape), (q.shape[-1], v.shape[-1]),
                      (K._s5(k, 2), K._s5(v, 2)), True)
        print(f"{case[0]:20s} fwd {med[(True, 'fwd')]:.4f} / {med[(False, 'fwd')]:.4f} "
              f"({med[(False, 'fwd')] / med[(True, 'fwd')]:.3f}x)   f+b {med[(True, 'f+b')]:.4f} / "
              f"{med[(False, 'f+b')]:.4f} ({med[(False, 'f+b')] / med[(True, 'f+b')]:.3f}x)   "
              f"tma used: {used}  diff {diff:.2e}", flush=True)


def sweep():
    print("== box sweep, TMA on (ms): forward, forward+backward")
    K.USE_TMA = True
    for case in CASES:
        if case[0] not in SWEEP:
            continue
        q, k, v, do, win, scale = inputs(case)
        base = run(q, k, v, do, win, scale)
        rows = [("model's choice", None)] + [(f"{bm} x {bn}", (bm, bn)) for bm, bn in SWEEP[case[0]]]
        for label, boxes in rows:
            try:
                got = run(q, k, v, do, win, scale, boxes)
                diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, base))
                fwd = bench(lambda: K.na_forward(q, k, v, *win, scale, boxes=boxes))
                fb = bench(lambda: run(q, k, v, do, win, scale, boxes))
                print(f"{case[0]:16s} {label:28s} fwd {fwd:.4f}  f+b {fb:.4f}  diff {diff:.2e}", flush=True)
            except Exception as e:   # a box the kernels cannot compile (shared memory): report, go on
                print(f"{case[0]:16s} {label:28s} failed: {type(e).__name__}: {str(e)[:160]}", flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__ if hasattr(triton, "__version__")
          else "", flush=True)
    ab()
    if "--no-sweep" not in sys.argv:
        sweep()
