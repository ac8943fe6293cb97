"""Probe (session 34): the row-block conv's tile shapes, again, on the LKA's maps.

The rule (``_rows_config``) gives a program up to 12 rows of one dilation phase over a [16
columns, 32 channels] strip on 4 warps for 64+ channels. On 56-column maps (VAN-b2's stage 1,
the bench's B64 C64 56x56) 16-column strips cover 64 columns, so 1/8 of the FMAs run on masked
lanes, and a phase of 19 rows splits into 2 blocks of 10 (20 rows). [8, 64] strips tile 56
columns exactly (128 bytes per pixel, one line), and whole phases as one block (19 rows) load
(19 + 6) / 19 = 1.3 input rows per output row instead of 1.6. Session 9 compared 8 and 12 rows
and [8, 128] strips at 4 rows on 8 warps, not these.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe81.py registers     # offline sm_90a
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe81.py sweep [WORKERS]    # GPU, vs the rule
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe81.py wgrad              # GPU: weight gradients
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe81.py tiles [WORKERS]    # GPU: the 5x5 tile blocks
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe81.py small [WORKERS]    # GPU: both on 14x14 and 7x7 maps
"""
import itertools
import statistics
import sys

import torch

from ops.common.tuning import cdiv
from ops.lka.kernels import _dw_rows, _tile_shape, dw_launch

# (max rows, BLOCK_W, BLOCK_C, warps)
# (max rows, BLOCK_W, BLOCK_C, warps); whole phases of 56-row maps (19 rows) at 4 elements per
# thread spill offline (250+ registers), so those take 2
CONFIGS = [(12, 16, 32, 4), (12, 8, 64, 4), (12, 8, 64, 8), (20, 8, 64, 8), (20, 8, 32, 4), (12, 8, 32, 2),
           (20, 16, 32, 8), (12, 4, 128, 4), (8, 8, 64, 4), (12, 32, 16, 4), (6, 8, 64, 4)]
SHAPES = [(64, 64, 56), (64, 128, 28), (16, 64, 128), (128, 32, 56), (128, 64, 28), (128, 64, 56), (128, 128, 28)]


def launch(shape, kernel, dil, flip, cfg):
    """ops' launch of the conv with ``cfg``'s tile in place of the rule's (PACKED and EVEN_C re-derived)."""
    from ops.lka.kernels import _conv_variant
    b, c, h, w = shape
    cl = (c * h * w, 1, w * c, c)
    grid, scalars, meta = dw_launch(shape, torch.bfloat16, (kernel, kernel), dil, flip, not flip, flip, (cl,) * 3)
    if cfg is None:
        return grid, scalars, meta
    max_rows, bw, bc, warps = cfg
    per_phase = cdiv(h, dil)
    rows = cdiv(per_phase, cdiv(per_phase, max_rows))
    n_rblocks = cdiv(per_phase, rows)
    packed, even = _conv_variant(torch.bfloat16, c, w, bc, kernel * kernel)
    meta = {**meta, "ROWS": rows, "BLOCK_W": bw, "BLOCK_C": bc, "num_warps": warps, "PACKED": packed, "EVEN_C": even}
    return (b * dil * n_rblocks, cdiv(w, bw), cdiv(c, bc)), (*scalars[:-1], n_rblocks), meta


def cases(shapes=SHAPES):
    """(shape, kernel, dilation, flip) of every row-block conv of the LKA on ``shapes`` (the rule's
    tile kernel takes the other 5x5s)."""
    for (b, c, sz), (k, d), flip in itertools.product(shapes, ((7, 3), (5, 1)), (False, True)):
        if _tile_shape((k, k), d, c, sz, flip) is None:
            yield (b, c, sz, sz), k, d, flip


def registers() -> None:
    from sm90_registers import report
    import ops.lka.kernels as L
    for (k, d), flip, cfg in itertools.product(((7, 3), (5, 1)), (False, True), CONFIGS):
        _, _, meta = launch((128, 128, 56, 56), k, d, flip, cfg)
        warps = meta.pop("num_warps")
        report(f"{k}x{k} d{d} {'dx' if flip else 'fwd'} R{meta['ROWS']} W{meta['BLOCK_W']} C{meta['BLOCK_C']}",
               L._dw_rows_kernel, dict(sxc=1, src=1, syc=1, **meta), warps)


def _tensors(shape, k):
    x, r = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
            for _ in range(2))
    return x, r, torch.randn(shape[1], 1, k, k, device="cuda") * 0.2, torch.randn(shape[1], device="cuda")


def _run(shape, k, d, flip, cfg, x, r, wt, bias, y):
    grid, scalars, meta = launch(shape, k, d, flip, cfg)
    _dw_rows[grid](x, wt, wt if flip else bias, r if flip else y, y, *scalars, **meta)


def _compile(job) -> str:
    shape, k, d, flip, cfg = job
    small = (1, *shape[1:])
    x, r, wt, bias = _tensors(small, k)
    try:
        _run(small, k, d, flip, cfg, x, r, wt, bias, torch.empty_like(x))
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{job}: {type(e).__name__}: {e}"[:200]


def sweep(shapes=SHAPES, configs=CONFIGS) -> None:
    import concurrent.futures
    import multiprocessing
    from lka_case import us
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    jobs = [(*case, cfg) for case in cases(shapes) for cfg in configs]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for msg in pool.map(_compile, jobs):
            if msg:
                print("compile failed:", msg, flush=True)
    for shape, k, d, flip in cases(shapes):
        torch.manual_seed(0)
        x, r, wt, bias = _tensors(shape, k)
        y0 = torch.empty_like(x)
        _run(shape, k, d, flip, None, x, r, wt, bias, y0)
        _, _, rule = launch(shape, k, d, flip, None)
        t0 = statistics.median(us(lambda: _run(shape, k, d, flip, None, x, r, wt, bias, y0)) for _ in range(3))
        rows = []
        for cfg in configs:
            y = torch.full_like(x, float("nan"))
            try:
                _run(shape, k, d, flip, cfg, x, r, wt, bias, y)
            except Exception as e:
                print(f"  {cfg}: {type(e).__name__}", flush=True)
                continue
            diff = (y.float() - y0.float()).abs().max().item()
            t = statistics.median(us(lambda cfg=cfg: _run(shape, k, d, flip, cfg, x, r, wt, bias, y)) for _ in range(3))
            rows.append((t, cfg, diff))
        rows.sort()
        b, c, h, w = shape
        print(f"B{b} C{c} {h}x{w} {k}x{k} d{d} {'dx' if flip else 'fwd'}: rule (R{rule['ROWS']} W{rule['BLOCK_W']} "
              f"C{rule['BLOCK_C']} w{rule['num_warps']}) {t0:.1f} us; "
              + "; ".join(f"R{cf[0]} W{cf[1]} C{cf[2]} w{cf[3]} {t:.1f} (diff {df:.0e})" for t, cf, df in rows[:4])
              + f" -> best {t0 / rows[0][0]:.2f}x", flush=True)


# the weight gradient's (max rows, BLOCK_W, BLOCK_C, warps): its rule on 56-column maps is up to 12
# rows of [16, 64] on 4 warps (8 elements per thread), 12.5% of them masked
WGRAD_CONFIGS = [(12, 16, 64, 4), (12, 8, 64, 2), (12, 8, 128, 4), (12, 8, 64, 4), (12, 8, 32, 2), (8, 8, 64, 2)]


def wgrad_launch(shape, k, d, cfg):
    """ops' weight-gradient launches (partials, reduction) with ``cfg``'s items in place of the rule's."""
    import ops.lka.kernels as L
    b, c, h, w = shape
    cl = (c * h * w, 1, w * c, c)
    nsplit, partials, reduction = L.wgrad_launches(shape, torch.bfloat16, (k, k), d, (cl, cl), None)
    if cfg is None:
        return nsplit, partials, reduction
    max_rows, bw, bc, warps = cfg
    per_phase = cdiv(h, d)
    rows = cdiv(per_phase, cdiv(per_phase, max_rows))
    n_rblocks, n_strips = cdiv(per_phase, rows), cdiv(w, bw)
    total, n_cblocks = b * d * n_rblocks * n_strips, cdiv(c, bc)
    nsplit, per_split = L._wgrad_splits(total, n_cblocks, rows * bw, None, 1024 if h * w >= 28 * 28 else 0)
    (_, _), scalars, meta = partials
    meta = {**meta, "ROWS": rows, "BLOCK_W": bw, "BLOCK_C": bc, "num_warps": warps}
    partials = ((nsplit, n_cblocks), (*scalars[:11], n_rblocks, n_strips, total, per_split), meta)
    rgrid, (_, rc), rmeta = reduction
    return nsplit, partials, (rgrid, (nsplit, rc), rmeta)


def _run_wgrad(shape, k, d, cfg, g, x, dw, db):
    import ops.lka.kernels as L
    nsplit, (grid, scalars, meta), (rgrid, rscalars, rmeta) = wgrad_launch(shape, k, d, cfg)
    part = torch.empty(nsplit, k * k + 1, shape[1], device="cuda", dtype=torch.float32)
    L._dw_wgrad[grid](g, x, part, *scalars, **meta)
    L._dw_wgrad_reduce[rgrid](part, dw, db, *rscalars, **rmeta)


def wgrad() -> None:
    """The weight gradient's items on 56-column maps against the rule (compiled in this process)."""
    from lka_case import us
    for (b, c, sz), (k, d) in itertools.product([s for s in SHAPES if s[2] == 56], ((7, 3), (5, 1))):
        shape = (b, c, sz, sz)
        torch.manual_seed(0)
        g, x, _, _ = _tensors(shape, k)
        dw0, db0 = torch.empty(c, 1, k, k, device="cuda"), torch.empty(c, device="cuda")
        _run_wgrad(shape, k, d, None, g, x, dw0, db0)
        _, (_, _, rule), _ = wgrad_launch(shape, k, d, None)
        t0 = statistics.median(us(lambda: _run_wgrad(shape, k, d, None, g, x, dw0, db0)) for _ in range(3))
        rows = []
        for cfg in WGRAD_CONFIGS:
            dw, db = torch.full_like(dw0, float("nan")), torch.full_like(db0, float("nan"))
            try:
                _run_wgrad(shape, k, d, cfg, g, x, dw, db)
            except Exception as e:
                print(f"  {cfg}: {type(e).__name__}", flush=True)
                continue
            diff = max(((dw - dw0).abs().max() / dw0.abs().max()).item(), ((db - db0).abs().max() / db0.abs().max()).item())
            t = statistics.median(us(lambda cfg=cfg: _run_wgrad(shape, k, d, cfg, g, x, dw, db)) for _ in range(3))
            rows.append((t, cfg, diff))
        rows.sort()
        print(f"wgrad B{b} C{c} {sz}x{sz} {k}x{k} d{d}: rule (R{rule['ROWS']} W{rule['BLOCK_W']} C{rule['BLOCK_C']} "
              f"w{rule['num_warps']}) {t0:.1f} us; "
              + "; ".join(f"R{cf[0]} W{cf[1]} C{cf[2]} w{cf[3]} {t:.1f} (rel diff {df:.0e})" for t, cf, df in rows[:4])
              + f" -> best {t0 / rows[0][0]:.2f}x", flush=True)


# the 5x5 tile kernel's forward blocks (TH, TW): the rule's 4x6 covers 60 of 56 columns and lost to
# the row blocks on 28x28 maps (0.78x, probe79); 7 columns divide 28 and 56
TILES = [(4, 6), (4, 7), (2, 7), (3, 7), (2, 14)]


def _run_tile(shape, tile, x, wt, bias, y, flip=False, r=None):
    """The 5x5 through the rule's launch (``tile`` None) or the tile kernel in ``tile`` blocks;
    ``flip``: the input gradient, adding ``r``."""
    import ops.lka.kernels as L
    cl = x.stride()
    args = (shape, x.dtype, (5, 5), 1, flip, not flip, flip, (cl,) * 3)
    if tile is None:
        launcher, (grid, scalars, meta) = L.conv_launch(*args)
    else:
        saved = L._tile_shape
        L._tile_shape = lambda *a: tile
        try:
            (grid, scalars, meta), launcher = L.dw_tile_launch(*args), L._dw_tiles
        finally:
            L._tile_shape = saved
    launcher[grid](x, wt, wt if flip else bias, r if flip else y, y, *scalars, **meta)


def _compile_tile(job) -> str:
    shape, tile, flip = job
    small = (1, *shape[1:])
    x, r, wt, bias = _tensors(small, 5)
    try:
        _run_tile(small, tile, x, wt, bias, torch.empty_like(x), flip, r)
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{job}: {type(e).__name__}: {e}"[:200]


def tiles(shapes=SHAPES, blocks=TILES, flips=(False,), channel_block: int = 64) -> None:
    """The 5x5 in tile blocks against the rule's launch (tiles or row blocks); ``shapes`` (B, C,
    size) or (B, C, H, W), those whose channels fill ``channel_block``-channel blocks."""
    import concurrent.futures
    import multiprocessing
    from lka_case import us
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    shapes = [s if len(s) == 4 else (*s, s[-1]) for s in shapes if s[1] % channel_block == 0]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for msg in pool.map(_compile_tile, [(shape, t, f) for shape in shapes for t in blocks for f in flips]):
            if msg:
                print("compile failed:", msg, flush=True)
    for shape, flip in itertools.product(shapes, flips):
        torch.manual_seed(0)
        x, r, wt, bias = _tensors(shape, 5)
        y0 = torch.empty_like(x)
        _run_tile(shape, None, x, wt, bias, y0, flip, r)
        t0 = statistics.median(us(lambda: _run_tile(shape, None, x, wt, bias, y0, flip, r)) for _ in range(3))
        rows = []
        for tile in blocks:
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


# VAN's 14x14 and 7x7 stages (VAN-b2's stage 3 holds 12 of its 20 LKAs): 16-column strips cover 16 of
# 14 columns; 2, 7 and 14 divide them
SMALL_SHAPES = [(128, 320, 14), (128, 160, 14), (128, 512, 7), (128, 256, 7)]
SMALL_CONFIGS = [(12, 16, 32, 4), (12, 8, 64, 4), (12, 2, 128, 2), (12, 2, 256, 4), (12, 4, 128, 4),
                 (12, 4, 64, 2), (12, 8, 32, 2), (12, 16, 64, 8), (12, 8, 128, 8)]
SMALL_TILES = [(4, 4), (4, 6), (4, 7), (2, 7), (3, 7)]


def small() -> None:
    """Row-block tiles (both convs, both directions) and 5x5 tile blocks (both directions) on
    VAN's 14x14 and 7x7 maps."""
    sweep(SMALL_SHAPES, SMALL_CONFIGS)
    tiles(SMALL_SHAPES, SMALL_TILES, (False, True))


if __name__ == "__main__":
    {"registers": registers, "sweep": sweep, "wgrad": wgrad, "tiles": tiles, "small": small}[sys.argv[1]]()
