"""Probe (session 16): NA forward occupancy. Nsight Compute (probe42) found the NA forwards bound by
latency at low occupancy: the backbone's one-warp programs use 143 registers (3 warps per scheduler),
GNA-2D's 4-warp ones 182 registers and 82 KB of shared memory (2 programs per SM). This times the
forward kernel alone at fixed warps, stages and register caps (``maxnreg``), outputs compared bit for bit
with the first row of each case.

    python benchmarks/probe/probe43.py [case ...]
"""
import statistics
import sys

import torch
from triton.testing import do_bench

import ops.neighborhood.kernels as K

# name: (q shape, kernel, stride, [(warps, stages, maxnreg), ...]); the first row is the current choice
CASES = {
    "NA-2D backbone": ((64, 56, 56, 4, 32), (7, 7), (1, 1),
                       [(1, 3, None), (1, 2, None), (1, 3, 128), (1, 2, 128), (1, 2, 96), (1, 3, 96), (1, 1, 128)]),
    "GNA-2D": ((1, 96, 96, 24, 128), (16, 16), (8, 16),
               [(4, 3, None), (4, 2, None), (4, 2, 168), (4, 2, 128), (4, 3, 168), (4, 3, 128)]),
    "NA-2D large": ((1, 96, 96, 24, 128), (17, 17), (1, 1),
                    [(4, 3, None), (4, 2, None), (4, 2, 168), (4, 3, 168), (4, 2, 128)]),
    "NA-3D video": ((1, 20, 48, 80, 12, 128), (7, 15, 15), (1, 1, 1),
                    [(4, 3, None), (4, 2, None), (4, 2, 168), (4, 3, 168)]),
    "GNA-3D": ((1, 20, 48, 80, 12, 128), (8, 16, 16), (2, 8, 8),
               [(8, 3, None), (8, 2, None), (8, 2, 168), (8, 3, 168)]),
}


def launcher(q, k, v, ks, st):
    """The forward's launch as ``na_forward`` builds it, as a function of (warps, stages, maxnreg)."""
    n = len(ks)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    grid, args, meta = K._fwd_launch(tuple(q.shape), k.shape[-2], v.shape[-1], ks, (1,) * n, st, (False,) * n, 0,
                                     q.dtype, q.shape[-1] ** -0.5, None)
    strides = (*K._s5(q, 2), *K._s5(k, 2), *K._s5(v, 2), *(0,) * 6, *K._s5(out, 2), *K._s5(lse, 1))
    full = (q, k, v, k, v, out, lse, *strides, *args)

    def run(w, s, r):
        opts = dict(num_warps=w, num_stages=s, **({} if r is None else {"maxnreg": r}))
        return K._na_fwd_kernel.fn[grid](*full, **meta, WIDE=False, **opts)
    return run, out, meta


def main():
    only = sys.argv[1:]
    for name, (shape, ks, st, variants) in CASES.items():
        if only and name not in only:
            continue
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        run, out, meta = launcher(q, k, v, ks, st)
        boxes = tuple(meta[f"BM{i}"] for i in range(3)), tuple(meta[f"BN{i}"] for i in range(3))
        print(f"{name}: boxes {boxes}, MASK_MODE {meta['MASK_MODE']}", flush=True)
        ref = None
        for w, s, r in variants:
            out.fill_(float("nan"))
            kern = run(w, s, r)
            torch.cuda.synchronize()
            same = ref is None or torch.equal(out, ref)
            if ref is None:
                ref = out.clone()
            ts = [do_bench(lambda: run(w, s, r), warmup=10, rep=100) for _ in range(3)]
            regs, spills = getattr(kern, "n_regs", "?"), getattr(kern, "n_spills", "?")
            smem = getattr(kern, "metadata", None)
            smem = getattr(smem, "shared", "?") if smem is not None else "?"
            print(f"  w{w} s{s} maxnreg {str(r):4s}: {1e3 * statistics.median(ts):8.1f} us  regs {regs} spills {spills}"
                  f" smem {smem}  same {same}", flush=True)


main()
