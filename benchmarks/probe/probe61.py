"""probe61: radial attention at Wan's sizes on the GPU: the kernels against FlexAttention with the
same block mask (output and gradients, bf16) and against an fp32 dense masked reference on one
head, then the fixed-side block (128 rows vs 64) of the block-sparse core on the 480p case.

    python3 benchmarks/probe/probe61.py --check    # accuracy only
    python3 benchmarks/probe/probe61.py --blocks   # fixed-side block sizes per kernel
"""
import sys

import torch
import triton.testing
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import ops
from ops.block_sparse import block_sparse_attention_reference
from ops.common import block_sparse as core

DECAY = 0.2


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def case(tpf, H=12, D=128, frames=21, seed=0):
    n = frames * tpf
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v, do = (torch.randn(1, n, H, D, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(4))
    return n, q, k, v, do


if "--check" in sys.argv:
    flex = torch.compile(flex_attention, dynamic=False)
    for tpf in (1560, 3600):
        n, q, k, v, do = case(tpf)
        mask = ops.radial_block_mask(21, tpf, 128, DECAY).cuda()
        bm = create_block_mask(lambda b, h, qi, ki: mask[qi // 128, ki // 128], None, None, n, n, device="cuda",
                               BLOCK_SIZE=128)
        ours = [t.clone().requires_grad_() for t in (q, k, v)]
        theirs = [t.clone().requires_grad_() for t in (q, k, v)]
        o = ops.radial_attention(*ours, 21, DECAY)
        g = torch.autograd.grad(o, ours, do)
        o2 = flex(*(t.transpose(1, 2) for t in theirs), block_mask=bm).transpose(1, 2)
        g2 = torch.autograd.grad(o2, theirs, do)
        for name, a, b in zip(("out", "dq", "dk", "dv"), (o, *g), (o2, *g2)):
            err = ((a.float() - b.float()).norm() / b.float().norm()).item()
            print(f"tpf {tpf} {name}: rel. L2 vs flex {err:.2e}, finite {bool(torch.isfinite(a).all())}")
        # the fp32 reference on head 0 (the last query block ragged: 1560*21 = 255*128 + 120)
        h = 0
        ref, _ = block_sparse_attention_reference(*(t[:, :, h:h + 1].float() for t in (q, k, v)), mask[None], 128,
                                                  128 ** -0.5)
        err = ((o[:, :, h:h + 1].float() - ref).norm() / ref.norm()).item()
        print(f"tpf {tpf} out vs the fp32 reference (head 0): rel. L2 {err:.2e}")

if "--blocks" in sys.argv:
    n, q, k, v, do = case(1560)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    for caps in ({"forward": 128, "dq": 128, "dkv": 128}, {"forward": 64, "dq": 64, "dkv": 64},
                 {"forward": 128, "dq": 64, "dkv": 128}):
        core.MAX_FIXED_ROWS.update(caps)
        core.forward_launch.cache_clear()
        core.backward_launches.cache_clear()
        fwd = bench(lambda: ops.radial_attention(q, k, v, 21, DECAY))

        def fb():
            for t in leaves:
                t.grad = None
            ops.radial_attention(*leaves, 21, DECAY).backward(do)
        print(f"fixed rows {caps}: fwd {fwd:.3f} ms, fwd+bwd {bench(fb):.3f} ms")
        for name, launcher in (("fwd", core._bs_fwd), ("dq", core._bs_bwd_dq), ("dkv", core._bs_bwd_dkv)):
            print(f"  {name} tuned: {[str(c) for c in launcher.configs.values()][-1:]}")

