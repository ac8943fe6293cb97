"""``foveal bench na1d``: 1-D neighborhood attention against dense SDPA and Flex, forward and
forward+backward (backward = 2.5x forward, FlashAttention's convention, as in ``na``)."""
from __future__ import annotations

import torch

import ops

from ..runner import Case, register_suite
from .peers import dense_peers, flex_peer, with_backward

# (batch, length, heads, head_dim, kernel): long-sequence cases where NA pays off on a GPU,
# and a small one the CPU reference finishes quickly.
GPU_CASES = [(1, 32768, 16, 128, 2049), (4, 8192, 16, 64, 513), (8, 4096, 8, 128, 257)]
CPU_CASES = [(1, 1024, 4, 32, 63)]


def _window_mask(length: int, kernel: int):
    def mask_mod(b, h, q_idx, kv_idx):
        start = (q_idx - kernel // 2).clamp(0, length - kernel)
        return (kv_idx >= start) & (kv_idx < start + kernel)
    return mask_mod


@register_suite("na1d")
def na1d_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    cases = []
    # Every forward case first: a run cut short by a time limit still has all forward figures.
    for direction in ("forward", "forward+backward"):
        train = direction != "forward"
        for batch, length, heads, dim, kernel in GPU_CASES if device == "cuda" else CPU_CASES:
            gen = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(batch, length, heads, dim, device=device, dtype=dtype, generator=gen)
                       .requires_grad_(train) for _ in range(3))
            impls = {"foveal": lambda q=q, k=k, v=v, kernel=kernel: ops.na1d(q, k, v, kernel_size=kernel)}
            impls.update(dense_peers(q, k, v, device))
            impls["flex (window mask)"] = flex_peer(q, k, v, _window_mask(length, kernel), device)
            if train:
                grad = torch.randn(batch, length, heads, dim, device=device, dtype=dtype, generator=gen)
                for impl, fn in list(impls.items()):
                    if callable(fn):   # the peers return [B, H, L, D]
                        g = grad if impl == "foveal" else grad.transpose(1, 2)
                        impls[impl] = with_backward(fn, (q, k, v), g)
            cases.append(Case(
                name=f"na1d L{length} k{kernel} B{batch}H{heads}D{dim}" + (" forward+backward" if train else ""),
                shapes={"q": [batch, length, heads, dim], "kernel_size": kernel},
                impls=impls,
                flops=4.0 * batch * heads * length * kernel * dim * (3.5 if train else 1.0),
                bytes=(4 if not train else 10) * q.numel() * q.element_size(),
                notes={"direction": direction},
            ))
    return cases
