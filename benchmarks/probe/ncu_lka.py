"""Driver for Nsight Compute on the LKA depthwise convs: three 5x5 and three 7x7 dilation-3 convs
of the lka bench's case 1 (B64 C64 56x56, channels-last bf16), taps in fp32 (autocast's) or,
with ``bf16``, in the maps' dtype (the bench's).

    ncu --clock-control none -k regex:"_dw_(tiles|rows)_kernel" -s 2 -c 2 --section SpeedOfLight \
        --section Occupancy --section SchedulerStats --section WarpStateStats --section LaunchStats \
        --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
        python benchmarks/probe/ncu_lka.py [bf16]

(``-s 2 -c 2``: the third 5x5 launch, on the tile kernel since session 33, and the first 7x7
one, on the row blocks.) Session 10 ran it on the row blocks alone, without ``--clock-control
none``: ncu then locks the SM clock to base while it profiles
(``probe-lka-ncu-s10-h200-2026-11-29.txt``); do not change the GPU's clocks. Session 36's
``probe85.py`` left a question for it: fp32 [taps, C] taps took the 5x5 tile forward from 43.3
to 33.6 us on this map, with 4% fewer instructions (its 50 strided tap loads a program touch ~32
lines each), while the 7x7 d3's loop lost 10% of its instructions for no gain (0.96x). Session 37
ran it with and without ``bf16`` and, for the stall reasons, with ``--section WarpStateStats
--metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio``
(``probe-lka-stalls-taps-s37-h200-2026-12-01.txt``).
"""
import sys

import torch

import ops.lka.kernels as L

tap_dtype = torch.bfloat16 if sys.argv[1:2] == ["bf16"] else torch.float32
x = torch.randn(64, 64, 56, 56, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
for k, d in ((5, 1), (7, 3)):
    w = (torch.randn(64, 1, k, k, device="cuda") * 0.1).to(tap_dtype)
    b = torch.randn(64, device="cuda").to(tap_dtype)
    for _ in range(3):
        L.dw_conv(x, w, b, d)
torch.cuda.synchronize()
