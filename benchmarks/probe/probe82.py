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
import sys

import torch

# (batch, channels, height, width): VAN-b0's 32- and 160-channel stages at batch 128, BEVANet-S's
# 32-channel detail maps (1024x2048 input, batch 1, 1/8 scale), and a 96-channel map
SHAPES = [(128, 32, 56, 56), (128, 160, 14, 14), (1, 32, 128, 256), (64, 96, 56, 56), (128, 160, 28, 28)]
BLOCKS = [(4, 6), (4, 8), (6, 6), (4, 4), (3, 7), (4, 7), (2, 8), (8, 8)]


def tiles() -> None:
    from probe81 import tiles as sweep
    sweep(SHAPES, BLOCKS, (False, True), channel_block=32)


def lka(base_path: str) -> None:
    from ab import load_base
    from probe78 import lka_channels_last
    lka_channels_last(load_base(base_path), SHAPES)


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
