"""The LKA shapes the probes share, (batch, channels, size): ``BENCH`` (the lka bench's three) and
``VAN`` (VAN-b0's and VAN-b2's four stages at batch 128), ``lka_params`` (an LKA's six weights)
and ``us`` (do_bench median, us)."""
import torch
from triton.testing import do_bench

BENCH = [(64, 64, 56), (64, 128, 28), (16, 64, 128)]
VAN = [(128, 32, 56), (128, 64, 28), (128, 160, 14), (128, 256, 7),     # VAN-b0
       (128, 64, 56), (128, 128, 28), (128, 320, 14), (128, 512, 7)]    # VAN-b2


def us(fn, rep: int = 40) -> float:
    return do_bench(fn, warmup=5, rep=rep, return_mode="median") * 1e3


def lka_params(c: int, device: str = "cuda") -> list:
    """fp32 [conv0 weight, bias, spatial weight, bias, conv1 weight, bias] of a C-channel LKA,
    scaled so the chain's maps stay O(1)."""
    return [torch.randn(c, 1, 5, 5, device=device) * 0.2, torch.randn(c, device=device),
            torch.randn(c, 1, 7, 7, device=device) * 0.1, torch.randn(c, device=device),
            torch.randn(c, c, 1, 1, device=device) * c ** -0.5, torch.randn(c, device=device)]


def conv_case(b: int, c: int, size: int, kernel: tuple[int, int], tap_dtype: torch.dtype = torch.float32,
              seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x, r, weight, bias) of one depthwise conv on the GPU: x and a residual r as [b, c, size,
    size] channels-last bf16, the taps (x 0.1) and bias in ``tap_dtype``."""
    torch.manual_seed(seed)
    x, r = (torch.randn(b, c, size, size, device="cuda", dtype=torch.bfloat16)
            .contiguous(memory_format=torch.channels_last) for _ in range(2))
    return (x, r, (torch.randn(c, 1, *kernel, device="cuda") * 0.1).to(tap_dtype),
            torch.randn(c, device="cuda").to(tap_dtype))
