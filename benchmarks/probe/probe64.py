"""probe64: BiFormer's 256-token regions (B8 128x128 C64 topk4, 8x8 regions of 16x16) through the
block-sparse core with 128-row forward blocks (session 25's cap for tiles over 64 tokens) against
64-row blocks (the cap before it), alternating in one process; fwd and fwd+bwd of the attention
with fixed routing indices. Ran at 5028138; since then 2-D tiles always take 64 rows (the cap applies
to sequence tiles only), so both arms now run 64.

    python3 benchmarks/probe/probe64.py
"""
import torch
import triton.testing

from ops.common import block_sparse as core

B, S, C, HEADS, NWIN, TOPK = 8, 128, 64, 2, 8, 4


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def main():
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, S, S, C, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(4))
    R = NWIN * NWIN
    idx = torch.stack([torch.randperm(R, device="cuda")[:TOPK] for _ in range(B * R)]).view(B, R, TOPK).int()
    tile = (S // NWIN, S // NWIN)
    scale = (C // HEADS) ** -0.5
    rows = {}
    for _ in range(3):
        for cap in (128, 64):
            core.MAX_FIXED_ROWS["forward"] = cap
            core.forward_launch.cache_clear()
            fwd = bench(lambda: core.block_sparse_attention_forward(q, k, v, idx, tile, HEADS, scale))
            out, lse = core.block_sparse_attention_forward(q, k, v, idx, tile, HEADS, scale)
            bwd = bench(lambda: core.block_sparse_attention_backward(do, q, k, v, out, lse, idx, tile, HEADS, scale))
            rows.setdefault(cap, []).append((fwd, bwd))
            cfg = list(core._bs_fwd.configs.values())[-1]
    for cap, r in rows.items():
        print(f"forward rows {cap}: fwd ms {[round(a, 4) for a, _ in r]}, bwd ms {[round(b, 4) for _, b in r]}")
    print("last forward config:", cfg)


if __name__ == "__main__":
    main()
