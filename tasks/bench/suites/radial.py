"""``foveal bench radial``: radial attention (and the block-sparse core under it) against
FlexAttention with the same block mask and dense attention.

Cases are BENCHMARKS.md's radial rows: Wan 2.1 at 480p (21 frames x 1560 tokens) and 720p
(21 x 3600), 12 heads of 128, the release's mask at 128-token blocks with decay 0.2 (block
density 0.33 / 0.24), forward and forward+backward. Peers: compiled FlexAttention with a
``BlockMask`` built once from the same block mask (the ragged last block masked by token), cuDNN
and flash SDPA over all tokens. ``flops`` counts the tokens the mask lets each query see
(4 * B * H * D per query-key pair forward, 3.5x for forward+backward); the FLOP bound is dense /
sparse FLOPs, so ``fraction_of_bound`` is the row's per-FLOP rate as a fraction of cuDNN's.
"""
from __future__ import annotations

import torch

import ops

from ..runner import Case, register_suite
from .peers import dense_peers, flex_peer, with_backward

GPU_CASES = [("wan 480p", 1, 12, 128, 21, 1560), ("wan 720p", 1, 12, 128, 21, 3600)]
CPU_CASES = [("tiny", 1, 2, 16, 6, 40)]
DECAY = 0.2


def _flex(q, k, v, block_mask: torch.Tensor, block_size: int, device: str):
    """Compiled FlexAttention whose ``BlockMask`` is this block mask (tokens past the end of the
    sequence are cut by ``create_block_mask`` itself)."""
    table = block_mask.to(device)

    def mask_mod(b, h, q_idx, kv_idx):
        return table[q_idx // block_size, kv_idx // block_size]
    return flex_peer(q, k, v, mask_mod, device, block_size)


@register_suite("radial")
def radial_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    cases = []
    for name, B, H, D, frames, tpf in GPU_CASES if device == "cuda" else CPU_CASES:
        bs = 128 if device == "cuda" else 16
        n = frames * tpf
        mask = ops.radial_block_mask(frames, tpf, bs, DECAY, "wan")
        per_block = torch.full((mask.shape[0],), bs)
        per_block[-1] = n - bs * (mask.shape[0] - 1)
        pairs = float(per_block @ mask.long() @ per_block)        # query-key pairs the mask allows
        bound = n * n / pairs
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v, do = (torch.randn(B, n, H, D, device=device, dtype=dtype, generator=gen) for _ in range(4))
        shapes = {"q": [B, n, H, D], "frames": frames, "tokens_per_frame": tpf}
        notes = {"block_size": bs, "decay_factor": DECAY, "block_density": round(mask.float().mean().item(), 4),
                 "token_density": round(1 / bound, 4)}

        def impls(q, k, v, frames=frames, bs=bs, mask=mask):
            out = {"foveal": lambda: ops.radial_attention(q, k, v, frames, DECAY, block_size=bs),
                   "flex (radial BlockMask)": _flex(q, k, v, mask, bs, device)}
            out.update(dense_peers(q, k, v, device))
            return out

        flops = 4.0 * B * H * D * pairs
        dense = "sdpa-cudnn (dense)" if device == "cuda" else "sdpa-math (dense)"
        cases.append(Case(name=f"radial fwd {name}", shapes=shapes, impls=impls(q, k, v), flops=flops,
                          notes={**notes, "direction": "forward"}, dense_impl=dense, flop_bound_x=bound))
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        fwd = impls(*leaves)
        cases.append(Case(name=f"radial fwd+bwd {name}", shapes=shapes,
                          impls={k_: fn if isinstance(fn, str) else with_backward(fn, leaves, do)
                                 for k_, fn in fwd.items()}, flops=3.5 * flops,
                          notes={**notes, "direction": "forward+backward"}, dense_impl=dense, flop_bound_x=bound))
    return cases
