"""Probe (session 16): NA forward occupancy. Nsight Compute (probe42) found the NA forwards bound by
latency at low occupancy: the backbone's one-warp programs use 143 registers (3 warps per scheduler),
GNA-2D's 4-warp ones 182 registers and 82 KB of shared memory (2 programs per SM). This times the
forward kernel alone at fixed warps, stages and register caps (``maxnreg``), outputs compared bit for bit
with the first row of each case (and their largest difference).

    python benchmarks/probe/probe43.py [case ...] [--boxes]   # --boxes: round 2, smaller key boxes
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


def launcher(q, k, v, ks, st, boxes=None):
    """The forward's launch as ``na_forward`` builds it (``boxes``: (query box, key box) over the
    padded axes, or the plan's), as a function of (warps, stages, maxnreg)."""
    n = len(ks)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    grid, args, meta = K._fwd_launch(tuple(q.shape), k.shape[-2], v.shape[-1], ks, (1,) * n, st, (False,) * n, 0,
                                     q.dtype, q.shape[-1] ** -0.5, boxes)
    strides = (*K._s5(q, 2), *K._s5(k, 2), *K._s5(v, 2), *(0,) * 6, *K._s5(out, 2), *K._s5(lse, 1))
    full = (q, k, v, k, v, out, lse, *strides, *args)

    def run(w, s, r):
        opts = dict(num_warps=w, num_stages=s, **({} if r is None else {"maxnreg": r}))
        return K._na_fwd_kernel.fn[grid](*full, **meta, WIDE=False, **opts)
    return run, out, meta


# round 2 (--boxes): smaller key boxes (less shared memory and fewer registers per program) for the
# 4-warp cases; rows (warps, stages, maxnreg, (query box, key box) or None for the plan's). The
# backbone rows (added after 653eb65, untimed): 16-row boxes on one warp walk 2.2-2.7x the needed
# products against 3.17x and compile to 64 registers against 128-144 (8 warps per scheduler), with
# main loops of ~175-190 SASS instructions per 256 scores against ~440-480 per 1024 (probe44-style
# compile); before the walk counters their three divisions made them lose (probe33)
BOXES = {
    "NA-2D backbone": [(1, 2, 128, None), (1, 3, 128, None), (1, 2, None, ((1, 8, 2), (1, 2, 8))),
                       (1, 3, None, ((1, 8, 2), (1, 2, 8))), (1, 2, None, ((1, 4, 4), (1, 4, 4))),
                       (1, 2, None, ((1, 2, 8), (1, 1, 16))), (1, 3, None, ((1, 2, 8), (1, 1, 16)))],
    "GNA-2D": [(4, 3, None, None), (4, 3, None, ((1, 4, 16), (1, 2, 16))), (4, 4, None, ((1, 4, 16), (1, 2, 16))),
               (4, 2, None, ((1, 4, 16), (1, 2, 16))), (2, 3, None, ((1, 2, 16), (1, 4, 16))),
               (2, 3, None, ((1, 2, 16), (1, 2, 16))), (1, 3, 128, ((1, 2, 16), (1, 2, 16)))],
    "NA-2D large": [(4, 3, None, None), (4, 3, None, ((1, 8, 8), (1, 4, 8))), (4, 4, None, ((1, 8, 8), (1, 4, 8))),
                    (4, 2, None, ((1, 8, 8), (1, 4, 8)))],
}


def main():
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    for name, (shape, ks, st, variants) in CASES.items():
        if only and name not in only:
            continue
        if "--boxes" in sys.argv:
            if name not in BOXES:
                continue
            variants = BOXES[name]
        else:
            variants = [(w, s, r, None) for w, s, r in variants]
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        run, out, meta = launcher(q, k, v, ks, st)
        boxes = tuple(meta[f"BM{i}"] for i in range(3)), tuple(meta[f"BN{i}"] for i in range(3))
        print(f"{name}: boxes {boxes}, MASK_MODE {meta['MASK_MODE']}", flush=True)
        ref = None
        for w, s, r, bx in variants:
            if bx is not None:
                run, out, meta = launcher(q, k, v, ks, st, bx)
            label = "" if bx is None else f" boxes {bx} mask {meta['MASK_MODE']}"
            out.fill_(float("nan"))
            kern = run(w, s, r)
            torch.cuda.synchronize()
            same = ref is None or torch.equal(out, ref)
            diff = 0.0 if ref is None else (out.float() - ref.float()).abs().max().item()
            if ref is None:
                ref = out.clone()
            ts = [do_bench(lambda: run(w, s, r), warmup=10, rep=100) for _ in range(3)]
            regs, spills = getattr(kern, "n_regs", "?"), getattr(kern, "n_spills", "?")
            smem = getattr(kern, "metadata", None)
            smem = getattr(smem, "shared", "?") if smem is not None else "?"
            print(f"  w{w} s{s} maxnreg {str(r):4s}{label}: {1e3 * statistics.median(ts):8.1f} us  regs {regs}"
                  f" spills {spills} smem {smem}  same {same} (max diff {diff:.2g})", flush=True)


main()
