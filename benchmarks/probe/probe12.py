"""Probe (session 5): GPU time of single LKA kernels under launch-configuration variants, on the
VAN-b0/b2 layer shapes (batch 128 at 224 px) and the bench's C128 case, channels-last bf16.

- 1x1 + gate forward (``dw_conv_pw_gate``) and backward (``pw_gate_backward``): the 64-pixel /
  4-warp tiles vs 32 pixels at 8 warps for 128+ input channels (``_pw_config``).
- depthwise weight gradient (``dw_conv_weight_grad``, 5x5 and 7x7 d3): run in two trees for
  an A/B of two kernel versions.
"""
import torch
from triton.testing import do_bench

import ops.lka.kernels as L

SHAPES = [(16, 64, 128), (128, 32, 56), (128, 64, 28), (128, 160, 14), (128, 256, 7),      # VAN-b0
          (128, 64, 56), (128, 128, 28), (128, 320, 14), (128, 512, 7),     # VAN-b2
          (64, 128, 28)]                                                    # bench lka
base = L._pw_config


def variant(small_wide):
    def cfg(c, hw, kind):
        bp, bci, bco, w = base(c, hw, "bwd")   # "bwd" = the 64-pixel rule for both kinds
        if small_wide and bci >= 128:
            bp, w = max(16, min(64, 4096 // bci)), 8
        return bp, bci, bco, w
    return cfg


def ms(fn):
    return do_bench(fn, warmup=5, rep=30, return_mode="median")


torch.manual_seed(0)
print("shape                 | pw fwd 64px  32px@8w | pw bwd 64px  32px@8w | wgrad 7x7d3  5x5")
for b, c, s in SHAPES:
    def t(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    a, x, g, s_ = t(b, c, s, s), t(b, c, s, s), t(b, c, s, s), t(b, c, s, s)
    wd, w1 = torch.randn(c, 1, 7, 7, device="cuda", dtype=torch.bfloat16), torch.randn(c, c, 1, 1, device="cuda", dtype=torch.bfloat16) / c ** 0.5
    bd, b1 = torch.randn(c, device="cuda", dtype=torch.bfloat16), torch.randn(c, device="cuda", dtype=torch.bfloat16)
    row = []
    for kind in ("fwd", "bwd"):
        for small in (False, True):
            L._pw_config = variant(small)
            if kind == "fwd":
                row.append(ms(lambda: L.dw_conv_pw_gate(a, wd, bd, 3, w1, b1, x)))
            else:
                row.append(ms(lambda: L.pw_gate_backward(s_, w1, b1, x, g)))
    L._pw_config = base
    for k, d in ((7, 3), (5, 1)):
        row.append(ms(lambda: L.dw_conv_weight_grad(g, x, (k, k), d)))
    print(f"B{b} C{c} {s}x{s}".ljust(22) + "| " + " ".join(f"{v * 1e3:6.0f}" for v in row[:2]) + "  | "
          + " ".join(f"{v * 1e3:6.0f}" for v in row[2:4]) + "  | " + " ".join(f"{v * 1e3:6.0f}" for v in row[4:6]),
          flush=True)
print("(microseconds, do_bench median)")
