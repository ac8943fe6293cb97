"""The LKA shapes the probes share, (batch, channels, size): ``BENCH`` (the lka bench's three) and
``VAN`` (VAN-b0's and VAN-b2's four stages at batch 128), and ``us`` (do_bench median, us)."""
from triton.testing import do_bench

BENCH = [(64, 64, 56), (64, 128, 28), (16, 64, 128)]
VAN = [(128, 32, 56), (128, 64, 28), (128, 160, 14), (128, 256, 7),     # VAN-b0
       (128, 64, 56), (128, 128, 28), (128, 320, 14), (128, 512, 7)]    # VAN-b2


def us(fn, rep: int = 40) -> float:
    return do_bench(fn, warmup=5, rep=rep, return_mode="median") * 1e3
