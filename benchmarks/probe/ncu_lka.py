"""Driver for Nsight Compute on the LKA depthwise convs (session 10): three 5x5 and three 7x7
dilation-3 convs of the lka bench's case 1 (B64 C64 56x56, channels-last bf16).

    ncu --clock-control none -k regex:_dw_rows_kernel -s 2 -c 2 --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section LaunchStats \
        --section MemoryWorkloadAnalysis python benchmarks/probe/ncu_lka.py

(``-s 2 -c 2``: the third 5x5 launch and the first 7x7 one.) Session 10 ran it without
``--clock-control none``: ncu then locks the SM clock to base while it profiles
(``probe-lka-ncu-s10-h200-2026-11-29.txt``); do not change the GPU's clocks.
"""
import torch

import ops.lka.kernels as L

x = torch.randn(64, 64, 56, 56, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
for k, d in ((5, 1), (7, 3)):
    w = torch.randn(64, 1, k, k, device="cuda") * 0.1
    b = torch.randn(64, device="cuda")
    for _ in range(3):
        L.dw_conv(x, w, b, d)
torch.cuda.synchronize()
