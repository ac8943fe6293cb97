"""Probe (session 30): tile shapes and split sizes of the depthwise weight gradient
(``_dw_wgrad_kernel`` + ``_dw_wgrad_reduce_kernel``) on VAN's MLP 3x3 maps, where it is the larger
part of the conv's backward (probe68: forward+backward 0.97 ms on C256 56x56 at batch 128, the
forward 0.23 of it). For each shape: the current rule's time (both launches), the best of a grid
of (ROWS, BLOCK_W, BLOCK_C, num_warps, pixels per split), each checked against the fp64 gradient.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe73.py [--ab]

``--ab``: the rule (after the small-kernel change) against the tiles the rule took before it
(up to 12 rows of [16, 32] and >= 1024 pixels per split on 28x28 maps), alternating, per shape.
"""
import itertools
import statistics
import sys

import torch
from triton.testing import do_bench

import ops.lka.kernels as L

SHAPES = [(128, 256, 56, 56), (128, 512, 28, 28), (128, 640, 14, 14), (128, 512, 56, 56), (128, 1024, 28, 28),
          (128, 1280, 14, 14)]
TILES = [(16, 64), (8, 64), (8, 128), (4, 128), (16, 32), (32, 32)]
ROWS = [4, 8, 12]
WARPS = [4, 8]
SPLIT_PIXELS = [512, 1024, 2048, 4096]


def launches(g, x, part, dw, db, shape, rows=None, bw=None, bc=None, warps=None, split_pixels=None):
    """(partials, reduction) launch closures for the rule (no overrides) or a given config."""
    b, c, h, w = shape
    nsplit, (grid, scalars, meta), (rgrid, rscalars, rmeta) = L.wgrad_launches(
        shape, x.dtype, (3, 3), 1, (g.stride(), x.stride()), x.device.index)
    if rows is not None:
        n_rblocks, n_strips = -(-h // rows), -(-w // bw)
        total = b * n_rblocks * n_strips
        per_split = max(1, min(total, -(-split_pixels // (rows * bw))))
        nsplit = -(-total // per_split)
        grid = (nsplit, -(-c // bc))
        scalars = (*scalars[:8], c, h, w, n_rblocks, n_strips, total, per_split)
        meta = {**meta, "ROWS": rows, "BLOCK_W": bw, "BLOCK_C": bc, "num_warps": warps}
        rscalars = (nsplit, c)
    p = part[:nsplit * 10 * c]

    def run():
        L._dw_wgrad_kernel[grid](g, x, p, *scalars, **meta)
        L._dw_wgrad_reduce_kernel[rgrid](p, dw, db, *rscalars, **rmeta)
    return run, nsplit


torch.manual_seed(0)
for shape in SHAPES:
    b, c, h, w = shape
    if "--ab" in sys.argv and h * w < 784:
        continue
    x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    g = torch.randn(*shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    xd, gd = x.double().requires_grad_(True), g.double()
    wd = torch.zeros(c, 1, 3, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    bd = torch.zeros(c, dtype=torch.float64, device="cuda", requires_grad=True)
    torch.nn.functional.conv2d(xd, wd, bd, padding=1, groups=c).backward(gd)
    ref_w, ref_b = wd.grad.float(), bd.grad.float()
    part = torch.empty(1 << 22, device="cuda", dtype=torch.float32)
    dw = torch.empty(c, 1, 3, 3, device="cuda")
    db = torch.empty(c, device="cuda")

    def err():
        return max(((dw - ref_w).norm() / ref_w.norm()).item(), ((db - ref_b).norm() / ref_b.norm()).item())
    rule, n_rule = launches(g, x, part, dw, db, shape)
    rule()
    e_rule = err()
    if "--ab" in sys.argv:
        old_rows = L._rows_config(c, h, w, 1, max_rows=12 if h * w >= 784 else 8, elems=512 if w <= 28 else 1024)
        old, _ = launches(g, x, part, dw, db, shape, old_rows[0], old_rows[1], old_rows[2], old_rows[3],
                          1024 if h * w >= 784 else old_rows[0] * old_rows[1])
        t = {"old": [], "rule": []}
        for _ in range(5):
            t["old"].append(do_bench(old, warmup=10, rep=40))
            t["rule"].append(do_bench(rule, warmup=10, rep=40))
        old()
        print(f"B{b} C{c} {h}x{w} 3x3 wgrad: old tiles {statistics.median(t['old']):.4f} ms (rel. error {err():.1e}), "
              f"rule {statistics.median(t['rule']):.4f} ms (rel. error {e_rule:.1e}, {n_rule} splits)", flush=True)
        continue
    t_rule = do_bench(rule, warmup=10, rep=40)
    results = []
    for rows, (bw, bc), warps, sp in itertools.product(ROWS, TILES, WARPS, SPLIT_PIXELS):
        if rows > h or bw > 2 * w or rows * bw > sp or bw * bc / (32 * warps) > 16 or bw * bc / (32 * warps) < 2:
            continue
        fn, nsplit = launches(g, x, part, dw, db, shape, rows, bw, bc, warps, sp)
        if nsplit * 10 * c > part.numel():
            continue
        dw.fill_(float("nan"))
        fn()
        e = err()
        t = do_bench(fn, warmup=5, rep=25)
        results.append((t, rows, bw, bc, warps, sp, nsplit, e))
    results.sort()
    gb = 2 * x.numel() * 2 / 1e9
    print(f"B{b} C{c} {h}x{w} 3x3 wgrad: rule {t_rule:.4f} ms ({gb / t_rule * 1e3:.0f} GB/s, {n_rule} splits, "
          f"rel. error {e_rule:.1e}), {len(results)} configs, worst rel. error {max(r[-1] for r in results):.1e}",
          flush=True)
    for t, rows, bw, bc, warps, sp, nsplit, e in results[:6]:
        print(f"    {t:.4f} ms ({gb / t * 1e3:.0f} GB/s)  ROWS {rows:2d} BLOCK_W {bw:2d} BLOCK_C {bc:3d} warps {warps}"
              f" split {sp:4d} px ({nsplit} splits) rel. error {e:.1e}")
