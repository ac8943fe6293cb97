"""probe66: the block-sparse core's TMA loads on short KV lists (H200, bf16).

Session 26 measured the sequence path's TMA loads on radial attention's long lists (hundreds of
128-token blocks per query block). probe65 found NA's walks losing to pointer loads below ~1000
tokens per program, where each program's descriptor setup is not repaid. This times
the core with ``ops.common.block_sparse.USE_TMA`` on and off, alternating in one
process, over random block masks whose lists run from 2 to 32 blocks.

Session 27's run (`probe-bsa-short-lists-s27-h200-2026-11-30.txt`) is inconclusive for short
lists: it timed the public mask entry point, whose per-call mask-to-lists conversion reads the
longest list back to the host, so the short-list rows (0.8-1.2 ms for ~0.1 ms of attention) measure
the host (``--mask`` repeats that). By default the probe now times ``attend_lists`` on lists
converted once. Session 28's run of that (`probe-bsa-short-lists-lists-s28-h200-2026-11-30.txt`)
set ``TMA_MIN_WALK``; the probe forces TMA on every walk (threshold 0) against pointer loads and
prints which path the rule picks ("rule").

    python3 benchmarks/probe/probe66.py [--rounds 3] [--mask]
"""
import sys

import torch
import triton.testing

import ops
from ops.block_sparse import attend_lists, block_mask_to_index, visit_order
from ops.common import block_sparse as core

ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
# (batch, tokens, heads, head dim, block size, KV blocks listed per query block)
CASES = [(4, 8192, 12, 128, 128, 2), (4, 8192, 12, 128, 128, 4), (4, 8192, 12, 128, 128, 8),
         (2, 16384, 12, 128, 128, 16), (2, 16384, 12, 128, 128, 32), (8, 4096, 16, 64, 64, 4),
         (8, 4096, 16, 64, 64, 16)]


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def main():
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for b, n, h, d, bs, listed in CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        nb = n // bs
        scores = torch.rand(b, nb, nb, device="cuda", generator=g)
        top = scores.topk(listed, dim=-1).indices
        mask = torch.zeros(b, nb, nb, dtype=torch.bool, device="cuda").scatter_(-1, top, True)
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        if "--mask" in sys.argv:   # session 27's run: the mask entry point, converting per call
            def fwd():
                return ops.block_sparse_attention(q, k, v, mask, bs)

            def fb():
                return torch.autograd.grad(ops.block_sparse_attention(*leaves, mask, bs), leaves, do)
        else:   # lists converted once: the attention alone
            index = block_mask_to_index(mask)
            order = visit_order(index, nb)

            def fwd():
                return attend_lists(q, k, v, index, order, bs)

            def fb():
                return torch.autograd.grad(attend_lists(*leaves, index, order, bs), leaves, do)

        times, res = {}, {}
        rule = core.forward_launch(q.get_device(), b, 1, n, h * d, (1, bs), nb, listed, h, q.dtype, 1.0,
                                   (*(n * h * d, n * h * d, h * d, 1) * 4, n * h, n * h, h, 1, nb * listed, listed),
                                   (0,) * 7).meta["TMA"]
        threshold = core.TMA_MIN_WALK
        core.TMA_MIN_WALK = 0
        for _ in range(ROUNDS):
            for tma in (True, False):
                core.USE_TMA = tma
                res[tma] = (fwd(), *fb())
                times.setdefault((tma, "f"), []).append(bench(fwd))
                times.setdefault((tma, "fb"), []).append(bench(fb))
        core.USE_TMA, core.TMA_MIN_WALK = True, threshold
        med = {key: sorted(t)[len(t) // 2] for key, t in times.items()}
        diff = max((a.float() - c.float()).abs().max().item() for a, c in zip(res[True], res[False]))
        print(f"B{b} N{n} H{h} D{d} block {bs}, {listed:2d} listed: fwd {med[(True, 'f')]:.4f} / "
              f"{med[(False, 'f')]:.4f} ms (TMA/pointers {med[(True, 'f')] / med[(False, 'f')]:.3f})   f+b "
              f"{med[(True, 'fb')]:.4f} / {med[(False, 'fb')]:.4f} ({med[(True, 'fb')] / med[(False, 'fb')]:.3f})"
              f"   diff {diff:.1e}   rule: {'TMA' if rule else 'pointers'}", flush=True)


if __name__ == "__main__":
    main()
