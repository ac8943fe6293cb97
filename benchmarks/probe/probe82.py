"""Probe (session 35): the 5x5 tile kernel on maps whose channels do not fill 64-channel blocks.

``_dw_tiles_kernel`` runs a block of output pixels with a channel vector per pixel on one warp; the
launch rule gave it whole 64-channel blocks only (two channels per lane, converted in pairs), so
VAN-b0's 32- and 160-channel stages and BEVANet-S's 32-channel maps kept the row blocks. With 32
channels a lane holds one channel: no paired conversion, but each input pixel is still loaded and
converted once for up to 25 FMAs, and the 25 taps and a 4x6 block's sums take half the registers.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe82.py tiles [WORKERS]   # GPU: blocks vs the rule
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe82.py lka BASE            # GPU: the LKA vs BASE's ops
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe82.py registers          # offline sm_90a

``tiles`` times the 5x5 forward and its input gradient (flipped, with the residual) in each block
shape against the rule's launch, outputs compared; ``lka`` times ``ops.large_kernel_attention``
(forward and forward+backward under CUDA graphs, channels-last) on VAN-b0's maps against another
copy of ``ops`` (``git archive <commit> ops | tar -x -C <folder>``; pass ``<folder>/ops``).
"""
import itertools
import statistics
import sys

import torch

from probe81 import _compile_tile, _run_tile, _tensors

# (batch, channels, height, width): VAN-b0's 32- and 160-channel stages at batch 128, BEVANet-S's
# 32-channel detail maps (1024x2048 input, batch 1, 1/8 scale), and a 96-channel map
SHAPES = [(128, 32, 56, 56), (128, 160, 14, 14), (1, 32, 128, 256), (64, 96, 56, 56), (128, 160, 28, 28)]
BLOCKS = [(4, 6), (4, 8), (6, 6), (4, 4), (3, 7), (4, 7), (2, 8), (8, 8)]


def tiles() -> None:
    import concurrent.futures
    import multiprocessing
    from lka_case import us
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    jobs = [(shape, t, f) for shape in SHAPES for t in BLOCKS for f in (False, True)]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for msg in pool.map(_compile_tile, jobs):
            if msg:
                print("compile failed:", msg, flush=True)
    for shape, flip in itertools.product(SHAPES, (False, True)):
        torch.manual_seed(0)
        x, r, wt, bias = _tensors(shape, 5)
        y0 = torch.empty_like(x)
        _run_tile(shape, None, x, wt, bias, y0, flip, r)
        t0 = statistics.median(us(lambda: _run_tile(shape, None, x, wt, bias, y0, flip, r)) for _ in range(3))
        rows = []
        for tile in BLOCKS:
            y = torch.full_like(x, float("nan"))
            _run_tile(shape, tile, x, wt, bias, y, flip, r)
            diff = (y.float() - y0.float()).abs().max().item()
            t = statistics.median(us(lambda tile=tile: _run_tile(shape, tile, x, wt, bias, y, flip, r)) for _ in range(3))
            rows.append((t, tile, diff))
        rows.sort()
        b, c, h, w = shape
        print(f"tiles B{b} C{c} {h}x{w} 5x5 {'dx' if flip else 'fwd'}: rule {t0:.1f} us; "
              + "; ".join(f"{th}x{tw} {t:.1f} (diff {df:.0e})" for t, (th, tw), df in rows)
              + f" -> best {t0 / rows[0][0]:.2f}x", flush=True)


def lka(base_path: str) -> None:
    import ops
    from ab import load_base
    from lka_case import lka_params
    from probe78 import graphed, rounds_of
    base = load_base(base_path)
    for b, c, h, w in SHAPES:
        x = torch.randn(b, c, h, w, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        p = [t.requires_grad_() for t in lka_params(c)]
        xg = x.detach().clone().requires_grad_()
        g = torch.randn_like(x)
        row = {}
        for name, mod in (("base", base), ("this", ops)):
            def fwd(mod=mod):
                with torch.no_grad():
                    mod.large_kernel_attention(x, *p)

            def fwd_bwd(mod=mod):
                torch.autograd.grad(mod.large_kernel_attention(xg, *p), [xg, *p], g)
            row[name] = (graphed(fwd), graphed(fwd_bwd))
        ref = ops.large_kernel_attention(x, *p)
        err = (base.large_kernel_attention(x, *p).float() - ref.float()).abs().max().item()
        t = rounds_of({f"{k} {i}": fns[i] for k, fns in row.items() for i in (0, 1)})
        print(f"LKA B{b} C{c} {h}x{w}, CUDA graphs, us: fwd {t['base 0']:.1f} -> {t['this 0']:.1f} "
              f"({t['base 0'] / t['this 0']:.2f}x), fwd+bwd {t['base 1']:.1f} -> {t['this 1']:.1f} "
              f"({t['base 1'] / t['this 1']:.2f}x), fwd diff {err:.1e}", flush=True)


def registers() -> None:
    import ops.lka.kernels as L
    from sm90_registers import report
    for (th, tw), flip in itertools.product(BLOCKS, (False, True)):
        c, hw = 32, 56
        cl = (c * hw * hw, 1, hw * c, c)
        saved = L._tile_shape
        L._tile_shape = lambda *a: (th, tw)
        try:
            (_, _, meta) = L.dw_tile_launch((128, c, hw, hw), torch.bfloat16, (5, 5), 1, flip, not flip, flip,
                                            (cl,) * 3)
        finally:
            L._tile_shape = saved
        warps = meta.pop("num_warps")
        report(f"5x5 C32 {th}x{tw} {'dx' if flip else 'fwd'}", L._dw_tiles_kernel, meta, warps)


if __name__ == "__main__":
    {"tiles": tiles, "lka": lambda: lka(sys.argv[2]), "registers": registers}[sys.argv[1]]()
