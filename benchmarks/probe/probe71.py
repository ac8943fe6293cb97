"""Probe (session 30): tile shapes of the depthwise row-block forward (``_dw_rows_kernel``) on
VAN's MLP 3x3 maps and the LKA convs. probe70 found the 13 MLP 3x3s of a VAN-b0 inference batch
(batch 128, bf16, channels-last) taking 1.12 ms in the Triton kernel against 0.99 ms in cuDNN's
``conv2d_c1_k1_nhwc_specialized`` (without its bias add): ~2 TB/s, half the H200's copy rate.
For each shape: the current launch rule's time, the best of a grid of (ROWS, BLOCK_W, BLOCK_C,
num_warps), cuDNN's conv without and with bias, all do_bench medians (ms); every config's output
is checked bit-identical to the rule's (the taps' order per element does not depend on the tiles).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe71.py [--quick]
"""
import itertools
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from ops.lka.kernels import _dw_rows_kernel, dw_launch

QUICK = "--quick" in sys.argv
SHAPES = [  # (B, C, H, W, (kh, kw), dilation, label)
    (128, 256, 56, 56, (3, 3), 1, "VAN-b0 MLP s1"), (128, 512, 28, 28, (3, 3), 1, "VAN-b0 MLP s2"),
    (128, 640, 14, 14, (3, 3), 1, "VAN-b0 MLP s3"), (128, 1024, 7, 7, (3, 3), 1, "VAN-b0 MLP s4"),
    (128, 512, 56, 56, (3, 3), 1, "VAN-b2 MLP s1"), (128, 1024, 28, 28, (3, 3), 1, "VAN-b2 MLP s2"),
    (128, 1280, 14, 14, (3, 3), 1, "VAN-b2 MLP s3"), (128, 2048, 7, 7, (3, 3), 1, "VAN-b2 MLP s4"),
    (64, 64, 56, 56, (5, 5), 1, "lka 56 5x5"), (64, 64, 56, 56, (7, 7), 3, "lka 56 7x7d3"),
    (64, 128, 28, 28, (5, 5), 1, "lka 28 5x5"), (64, 128, 28, 28, (7, 7), 3, "lka 28 7x7d3"),
    (16, 64, 128, 128, (5, 5), 1, "lka 128 5x5"), (16, 64, 128, 128, (7, 7), 3, "lka 128 7x7d3"),
]
if QUICK:
    SHAPES = SHAPES[:1] + SHAPES[9:10]
TILES = [(16, 32), (8, 64), (16, 64), (8, 128), (32, 32), (4, 128), (32, 16), (4, 64)]
ROWS = [4, 8, 12, 16]
WARPS = [2, 4, 8]


def launch(x, w, b, y, shape, k, d, rows=None, bw=None, bc=None, warps=None):
    cl = x.stride()
    grid, scalars, meta = dw_launch(shape, x.dtype, k, d, False, True, False, (cl, cl, cl))
    if rows is not None:
        bsz, c, h, wd = shape
        n_rblocks = -(-(-(-h // d)) // rows)
        grid = (bsz * d * n_rblocks, -(-wd // bw), -(-c // bc))
        scalars = (*scalars[:-1], n_rblocks)
        meta = {**meta, "ROWS": rows, "BLOCK_W": bw, "BLOCK_C": bc, "num_warps": warps}
    return lambda: _dw_rows_kernel[grid](x, w, b, y, y, *scalars, **meta)


torch.manual_seed(0)
for bsz, c, h, wd, k, d, label in SHAPES:
    shape = (bsz, c, h, wd)
    x = torch.randn(bsz, c, h, wd, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, *k, device="cuda") * 0.2
    b = torch.randn(c, device="cuda")
    y0, y = torch.empty_like(x), torch.empty_like(x)
    rule = launch(x, w, b, y0, shape, k, d)
    rule()
    t_rule = do_bench(rule, warmup=10, rep=40)
    pad = tuple(d * (n - 1) // 2 for n in k)
    wb = w.to(torch.bfloat16)
    t_cudnn = do_bench(lambda: F.conv2d(x, wb, None, 1, pad, d, c), warmup=10, rep=40)
    t_cudnn_b = do_bench(lambda: F.conv2d(x, wb, b.to(torch.bfloat16), 1, pad, d, c), warmup=10, rep=40)
    results = []
    for rows, (bw, bc), warps in itertools.product(ROWS, TILES, WARPS):
        per_thread = bw * bc / (32 * warps)
        if per_thread < 2 or per_thread > 16 or rows * per_thread > 96 or rows > -(-h // d):
            continue
        fn = launch(x, w, b, y, shape, k, d, rows, bw, bc, warps)
        y.fill_(float("nan"))
        try:
            fn()
        except Exception as e:  # out of resources
            print(f"  skip R{rows} {bw}x{bc} w{warps}: {type(e).__name__}")
            continue
        torch.cuda.synchronize()
        same = torch.equal(y, y0)
        t = do_bench(fn, warmup=5, rep=25)
        results.append((t, rows, bw, bc, warps, same))
    results.sort()
    gb = 2 * x.numel() * 2 / 1e9
    bad = [r for r in results if not r[-1]]
    print(f"{label} B{bsz} C{c} {h}x{wd} {k[0]}x{k[1]} d{d}: rule {t_rule:.4f} ms ({gb / t_rule * 1e3:.0f} GB/s), "
          f"cuDNN {t_cudnn:.4f} (+bias {t_cudnn_b:.4f}), {len(results)} configs, {len(bad)} not bit-identical", flush=True)
    for t, rows, bw, bc, warps, same in results[:6]:
        print(f"    {t:.4f} ms ({gb / t * 1e3:.0f} GB/s)  ROWS {rows:2d} BLOCK_W {bw:2d} BLOCK_C {bc:3d} warps {warps}"
              f"{'' if same else '  DIFFERS'}")
