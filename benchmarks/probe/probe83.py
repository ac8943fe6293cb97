"""Probe (session 35): the depthwise weight gradient from pixel tiles (``_dw_wgrad_tiles_kernel``).

The row-block weight gradient takes 148 us for the 7x7 dilation 3 at B64 C64 56x56 (the forward
conv: ~62), 244 of the LKA backward's ~450 us with the 5x5's. Per item it reloads and converts
the dy rows for every kernel column (offline sm_90a: 2.1 instructions per FFMA) at 212 registers,
two 4-warp programs per SM. The tile form loads each dy pixel once per item and each input pixel
of the halo once, keeps one [BLOCK_C] sum per tap with one channel per lane (no reduction until the
program ends): offline also ~2.1 instructions per FFMA (masks and 16-bit loads), but 128
registers on 2 warps, up to 16 warps per SM.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe83.py sweep [WORKERS]   # GPU: tiles vs the row blocks
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe83.py quick [more|B,C,S ...]   # GPU: in-process
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe83.py registers         # offline sm_90a

``sweep`` times each (TH, TW, warps) at 8 programs per SM, then the best at 4, 16 and 32, against
the row blocks, on the bench's and VAN's maps, bf16 channels-last, both LKA convs; outputs
compared with the row blocks'. Session 35 ran ``quick``, session 36 ``quick more`` (its 128x128 and
7x7 maps joined the rule).
"""
import itertools
import statistics
import sys

import torch

from lka_case import BENCH, VAN

TILES = [(4, 4), (4, 6), (2, 8), (4, 8)]
SHAPES = [(b, c, sz) for b, c, sz in BENCH + VAN]
CONVS = [(7, 3), (5, 1)]


def _warps(c: int):
    return [w for w in (1, 2, 4) if 32 * w <= max(32, c) and not (w == 4 and c < 128)]


def jobs():
    for (b, c, sz), (k, d) in itertools.product(SHAPES, CONVS):
        for tile, warps in itertools.product(TILES, _warps(c)):
            yield (b, c, sz, sz), k, d, (*tile, warps, 8)


def _run(shape, k, d, cfg, g, x, dw, db):
    """The weight gradient through ops' launch: the rule's (``cfg`` None), the row blocks ("rows")
    or the tiles in ``cfg`` = (TH, TW, warps, programs per SM)."""
    import ops.lka.kernels as L
    cl = x.stride()
    saved = L._wgrad_tile
    if cfg is not None:
        L._wgrad_tile = (lambda *a: None) if cfg == "rows" else (lambda *a: cfg)
    try:
        launcher, (nsplit, (grid, scalars, meta), (rgrid, rscalars, rmeta)) = L.wgrad_program(
            shape, torch.bfloat16, (k, k), d, (cl, cl), None)
    finally:
        L._wgrad_tile = saved
    part = torch.empty(nsplit, k * k + 1, shape[1], device="cuda", dtype=torch.float32)
    launcher[grid](g, x, part, *scalars, **meta)
    L._dw_wgrad_reduce[rgrid](part, dw, db, *rscalars, **rmeta)


def _tensors(shape, k):
    g, x = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
            for _ in range(2))
    c = shape[1]
    return g, x, torch.empty(c, 1, k, k, device="cuda"), torch.empty(c, device="cuda")


def _compile(job) -> str:
    shape, k, d, cfg = job
    small = (1, *shape[1:])
    g, x, dw, db = _tensors(small, k)
    try:
        _run(small, k, d, cfg, g, x, dw, db)
        torch.cuda.synchronize()
        return ""
    except Exception as e:
        return f"{job}: {type(e).__name__}: {e}"[:300]


def sweep() -> None:
    import concurrent.futures
    import multiprocessing
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for msg in pool.map(_compile, list(jobs())):
            if msg:
                print("compile failed:", msg, flush=True)
    for (b, c, sz), (k, d) in itertools.product(SHAPES, CONVS):
        t0, timed = _case((b, c, sz, sz), k, d)
        rows = sorted(timed((*tile, warps, 8)) for tile, warps in itertools.product(TILES, _warps(c)))
        best = rows[0][1]
        rows += sorted(timed((*best[:3], per_sm)) for per_sm in (4, 16, 32))
        _report((b, c, sz), k, d, t0, rows, 6)


def _case(shape, k, d):
    """(the row blocks' us, timed(cfg) -> (us, cfg, max relative difference from the row blocks'
    gradients))."""
    from lka_case import us
    torch.manual_seed(0)
    g, x, dw0, db0 = _tensors(shape, k)
    _run(shape, k, d, "rows", g, x, dw0, db0)
    t0 = statistics.median(us(lambda: _run(shape, k, d, "rows", g, x, dw0, db0)) for _ in range(3))

    def timed(cfg):
        dw, db = torch.full_like(dw0, float("nan")), torch.full_like(db0, float("nan"))
        _run(shape, k, d, cfg, g, x, dw, db)
        diff = max(((dw - dw0).abs().max() / dw0.abs().max()).item(),
                   ((db - db0).abs().max() / db0.abs().max()).item())
        return statistics.median(us(lambda: _run(shape, k, d, cfg, g, x, dw, db)) for _ in range(3)), cfg, diff
    return t0, timed


def _report(case, k, d, t0, rows, n) -> None:
    b, c, sz = case
    rows = sorted(rows)
    print(f"wgrad B{b} C{c} {sz}x{sz} {k}x{k} d{d}: rows {t0:.1f} us; "
          + "; ".join(f"{cf[0]}x{cf[1]} w{cf[2]} p{cf[3]} {t:.1f} ({df:.0e})" for t, cf, df in rows[:n])
          + f" -> best {t0 / rows[0][0]:.2f}x", flush=True)


QUICK_SHAPES = [(64, 64, 56), (128, 64, 56), (128, 32, 56), (128, 128, 28), (128, 320, 14)]
# what session 35 left unmeasured: the bench's 128x128 map, VAN's 7x7 maps and VAN-b0's C160 14x14
MORE_SHAPES = [(16, 64, 128), (128, 512, 7), (128, 256, 7), (128, 160, 14)]


def quick() -> None:
    """In-process (each config compiled on first use, rows printed as they come): (4, 4) and (2, 8)
    tiles at 2 warps (1 for 32 channels) and 4 / 8 / 16 programs per SM, on the bench's and
    VAN-b2's 56x56 maps, VAN-b0's 32-channel map and VAN-b2's 28x28 and 14x14 maps (``quick
    more``: the shapes session 35 did not measure; ``quick B,C,S ...``: those maps)."""
    args = sys.argv[2:]
    shapes = (MORE_SHAPES if args == ["more"] else [tuple(int(v) for v in a.split(",")) for a in args] if args
              else QUICK_SHAPES)
    for (b, c, sz), (k, d) in itertools.product(shapes, CONVS):
        t0, timed = _case((b, c, sz, sz), k, d)
        rows = [timed((*tile, 1 if c < 64 else 2, per_sm)) for tile, per_sm in itertools.product(((4, 4), (2, 8)),
                                                                                                 (4, 8, 16))]
        _report((b, c, sz), k, d, t0, rows, len(rows))


def registers() -> None:
    import ops.lka.kernels as L
    from sm90_registers import report
    L._sm_count = lambda index: 132
    for (b, c, sz), (k, d) in itertools.product([(64, 64, 56)], CONVS):
        for tile, warps in itertools.product(TILES, (1, 2)):
            cl = (c * sz * sz, 1, sz * c, c)
            L._wgrad_tile = lambda *a: (*tile, warps, 8)
            _, (_, (_, _, meta), _) = L.wgrad_program((b, c, sz, sz), torch.bfloat16, (k, k), d, (cl, cl), None)
            nw = meta.pop("num_warps")
            report(f"wgrad tiles {k}x{k} d{d} {tile[0]}x{tile[1]} C{c}", L._dw_wgrad_tiles_kernel, meta, nw)


if __name__ == "__main__":
    {"sweep": sweep, "quick": quick, "registers": registers}[sys.argv[1]]()
