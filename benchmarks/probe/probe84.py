"""Probe (session 35, written after the device time ran out): the tile weight gradient with an
unmasked path for interior items.

``_dw_wgrad_tiles_kernel`` (ops) masks every load: per input pixel of an item's halo two
compares against the map's bounds and a zero fill, ~5 instructions with the load and its
conversion (offline sm_90a), for ~6-8 FFMAs. Items whose dy pixels and whole halo lie inside
the map need none of it: 73% of the 5x5's 4x4 items on 56x56 maps (51% on 28x28), 28% of the
7x7 dilation 3's on 56x56 (none on 28x28: a phase of 10 rows is 3 blocks). ops' kernel runs an
item through one jit helper (``_wgrad_tile_item``); with ``SPLIT`` (off in ops until this is
timed: ``_WGRAD_SPLIT``) it calls it unmasked for interior items (channel blocks whole:
``EVEN_C``, or only the loop-invariant channel mask) and masked otherwise. This probe launches it
both ways with ops' launch parameters (``wgrad_tile_launches``).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe84.py check       # interpreter or GPU, vs ops and fp64
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe84.py sass        # offline sm_90a
    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe84.py ab          # GPU: vs ops' tiles, per conv

Offline (``sass``, Triton 3.6, sm_90a, 4x4 items on 2 warps): the two paths take the 5x5 from 96
to 127 registers and the 7x7 dilation 3 from 128 to 229 (half the programs per SM), so ``ab``
also times the split kernel capped at 128 registers.

Session 36 (H200, ops at 06ae538; ``probe-lka-taps-split-s36-h200-2026-12-01.txt``): ``check``
bit-equal to the masked kernel; ``ab`` B64 C64 56x56 7x7 d3: 112.3 us masked, 132.9 split
(0.85x), 139.4 capped (0.81x). ``SPLIT`` left ops after that; this probe needs 06ae538's ops.
"""
import itertools
import statistics
import sys

import torch

import ops.lka.kernels as L


CONVS = [((7, 7), 3), ((5, 5), 1)]


def _launch(g, x, kernel, dil, split: bool, tile=(4, 4, 2, 8), maxnreg: int | None = None):
    """Weight and bias gradients through ops' tile launch, on ops' kernel or this one (``maxnreg``:
    its register cap)."""
    saved = L._wgrad_tile
    L._wgrad_tile = lambda *a: tile
    try:
        _, (nsplit, (grid, scalars, meta), (rgrid, rscalars, rmeta)) = L.wgrad_program(
            tuple(x.shape), x.dtype, kernel, dil, (g.stride(), x.stride()), x.device.index)
    finally:
        L._wgrad_tile = saved
    c = x.shape[1]
    part = torch.empty(nsplit, kernel[0] * kernel[1] + 1, c, device=x.device, dtype=torch.float32)
    if split:
        meta = {**meta, "SPLIT": True, "EVEN_C": c % meta["BLOCK_C"] == 0}
    if maxnreg is not None:
        meta = {**meta, "maxnreg": maxnreg}
    L._dw_wgrad_tiles[grid](g, x, part, *scalars, **meta)
    dw = torch.full((c, 1, *kernel), float("nan"), device=x.device)
    db = torch.full((c,), float("nan"), device=x.device)
    L._dw_wgrad_reduce[rgrid](part, dw, db, *rscalars, **rmeta)
    return dw, db


def _interior_items(h, w, kernel, dil, th, tw) -> int:
    """Items of one batch item that the split kernel runs unmasked (its ``inside`` test)."""
    n = 0
    for ph, pw, t, u in itertools.product(range(dil), range(dil), range(-(-(-(-h // dil)) // th)),
                                          range(-(-(-(-w // dil)) // tw))):
        hb, wb = ph + dil * th * t, pw + dil * tw * u
        h0, w0 = hb - dil * ((kernel[0] - 1) // 2), wb - dil * ((kernel[1] - 1) // 2)
        n += (h0 >= 0 and w0 >= 0 and h0 + dil * (th + kernel[0] - 2) < h and w0 + dil * (tw + kernel[1] - 2) < w
              and hb + dil * (th - 1) < h and wb + dil * (tw - 1) < w)
    return n


def check() -> None:
    """SPLIT against ops' launch and fp64 autograd: odd maps (interior and border items), a partial
    channel block and whole ones."""
    from ops.lka import depthwise_conv2d_reference
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = (torch.float32, torch.bfloat16) if device == "cuda" else (torch.float32, torch.float16)
    for (kernel, dil), c, dtype in itertools.product(CONVS, (64, 40), dtypes):
        torch.manual_seed(0)
        b, h, w = (1, 37, 39) if dil == 3 else (2, 17, 19)
        assert _interior_items(h, w, kernel, dil, 4, 4) > 0, "the map must hold interior items"
        g, x = (torch.randn(b, c, h, w, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
                for _ in range(2))
        xl = x.double().requires_grad_()
        wl = torch.zeros(c, 1, *kernel, dtype=torch.float64, device=device, requires_grad=True)
        bl = torch.zeros(c, dtype=torch.float64, device=device, requires_grad=True)
        ref = torch.autograd.grad(depthwise_conv2d_reference(xl, wl, bl, dil), (wl, bl), g.double())
        tile = (4, 4, 1, 8) if device == "cpu" else (4, 4, 2, 8)
        ours, base = _launch(g, x, kernel, dil, True, tile), _launch(g, x, kernel, dil, False, tile)
        err = max(((o.double() - r).abs().max() / r.abs().max()).item() for o, r in zip(ours, ref))
        same = max((o - s).abs().max().item() for o, s in zip(ours, base))
        print(f"{kernel[0]}x{kernel[1]} d{dil} C{c} {dtype}: max rel err vs fp64 {err:.1e}, vs ops' tiles {same:.1e}",
              flush=True)
        assert err < (1e-5 if dtype == torch.float32 else 1e-2), err


def sass() -> None:
    from sm90_registers import DIVISIBLE, compile_sm90, ptxas_usage, sass_counts, signature
    L._sm_count = lambda index: 132
    for (kernel, dil), c in itertools.product(CONVS, (64, 160)):
        cl = (c * 56 * 56, 1, 56 * c, c)
        L._wgrad_tile = lambda *a: (4, 4, 2, 8)
        _, (_, (_, _, meta), _) = L.wgrad_program((64, c, 56, 56), torch.bfloat16, kernel, dil, (cl, cl), None)
        nw = meta.pop("num_warps")
        fn = L._dw_wgrad_tiles_kernel
        for name, extra in (("ops", {}), ("split", {"SPLIT": True, "EVEN_C": c % meta["BLOCK_C"] == 0})):
            sig = {n: signature(n) for n in fn.arg_names}
            sig["PART"] = "*fp32"
            err, cubin = compile_sm90(fn, sig, {**meta, **extra}, DIVISIBLE | {"sgb"}, nw, stem=f"/tmp/_p84_{name}")
            regs = ptxas_usage(err)[0]
            ops_ = sass_counts(cubin)
            print(f"{kernel[0]}x{kernel[1]} d{dil} C{c} {name}: {regs} registers, {sum(ops_.values())} static "
                  f"instructions, FFMA {ops_['FFMA']}, LDG {ops_['LDG']}, ISETP {ops_['ISETP']}, PRMT {ops_['PRMT']}",
                  flush=True)


def ab() -> None:
    """Split against ops' tiles in one process (us, medians of 3 do_bench medians)."""
    from lka_case import us
    for (b, c, sz), (kernel, dil) in itertools.product([(64, 64, 56), (128, 64, 56), (128, 32, 56), (128, 128, 28),
                                                          (128, 320, 14)], CONVS):
        if dil == 3 and sz < 28:
            continue
        torch.manual_seed(0)
        g, x = (torch.randn(b, c, sz, sz, device="cuda", dtype=torch.bfloat16)
                .contiguous(memory_format=torch.channels_last) for _ in range(2))
        tile = L._wgrad_tile(kernel, dil, c, sz)
        arms = {"ops": (False, None), "split": (True, None), "split capped": (True, 128)}
        t = {k: statistics.median(us(lambda a=a: _launch(g, x, kernel, dil, a[0], tile, a[1])) for _ in range(3))
             for k, a in arms.items()}
        diff = max((o - s).abs().max().item() for o, s in zip(_launch(g, x, kernel, dil, True, tile),
                                                              _launch(g, x, kernel, dil, False, tile)))
        print(f"B{b} C{c} {sz}x{sz} {kernel[0]}x{kernel[1]} d{dil}: ops tiles {t['ops']:.1f} us, split "
              f"{t['split']:.1f} ({t['ops'] / t['split']:.2f}x), capped at 128 registers {t['split capped']:.1f} "
              f"({t['ops'] / t['split capped']:.2f}x), diff {diff:.0e}", flush=True)


if __name__ == "__main__":
    {"check": check, "sass": sass, "ab": ab}[sys.argv[1]]()
