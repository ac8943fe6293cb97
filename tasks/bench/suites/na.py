"""``foveal bench na``: 2-D/3-D neighborhood attention and GNA, forward and forward+backward.

Cases are BENCHMARKS.md's NA rows. Peers: cuDNN and flash SDPA over all tokens (dense), compiled
FlexAttention on tokens in tiled order with a block mask built once, and NATTEN when importable.
``flops`` counts the work NA needs: 4 * B * H * N * window * D forward, 3.5x that for forward +
backward (backward = 2.5x forward, FlashAttention's convention). The FLOP bound is dense FLOPs /
NA FLOPs; each row's ``fraction_of_bound`` is its speedup over ``sdpa-cudnn (dense)`` divided by
that bound (the "bound" column).
"""
from __future__ import annotations

import math

import torch

import ops

from ..runner import Case, register_suite
from .peers import dense_peers, flex_peer, with_backward

# name, (batch, heads, head_dim), spatial shape, kernel, stride, flex token tile
GPU_CASES = [
    ("NA-2D large", (1, 24, 128), (96, 96), (17, 17), (1, 1), (8, 16)),
    ("NA-2D backbone", (64, 4, 32), (56, 56), (7, 7), (1, 1), (8, 8)),
    ("NA-3D video", (1, 12, 128), (20, 48, 80), (7, 15, 15), (1, 1, 1), (2, 8, 8)),
    ("GNA-2D", (1, 24, 128), (96, 96), (16, 16), (8, 16), (8, 16)),
    ("GNA-3D", (1, 12, 128), (20, 48, 80), (8, 16, 16), (2, 8, 8), (2, 8, 8)),
]
CPU_CASES = [
    ("NA-2D tiny", (1, 2, 16), (12, 12), (5, 5), (1, 1), (4, 4)),
    ("GNA-2D tiny", (1, 2, 16), (8, 8), (4, 4), (2, 4), (4, 4)),
]


def _axis_ok(i, j, length: int, kernel: int, stride: int):
    """Elementwise NATTEN window rule on one axis (dilation 1, non-causal), for a mask_mod."""
    leader = torch.clamp((i // stride) * stride + stride // 2, max=length - 1)
    lo = torch.clamp(torch.clamp(leader - kernel // 2, min=0), max=length - kernel)
    return (j >= lo) & (j <= lo + kernel - 1)


def _tiled_coords(idx, shape: tuple[int, ...], tile: tuple[int, ...]):
    """Token index in tile-major order -> per-axis coordinates."""
    per_tile = math.prod(tile)
    tile_idx, offset = idx // per_tile, idx % per_tile
    grid = [n // t for n, t in zip(shape, tile)]
    coords = []
    for a in range(len(shape)):
        inner_t = math.prod(grid[a + 1:])
        inner_o = math.prod(tile[a + 1:])
        coords.append(((tile_idx // inner_t) % grid[a]) * tile[a] + (offset // inner_o) % tile[a])
    return coords


def tiled_mask_mod(shape, kernel, stride, tile):
    """FlexAttention mask_mod of NA/GNA for tokens stored in tile-major order."""
    def mask_mod(b, h, q_idx, kv_idx):
        qc, kc = _tiled_coords(q_idx, shape, tile), _tiled_coords(kv_idx, shape, tile)
        ok = _axis_ok(qc[0], kc[0], shape[0], kernel[0], stride[0])
        for a in range(1, len(shape)):
            ok = ok & _axis_ok(qc[a], kc[a], shape[a], kernel[a], stride[a])
        return ok
    return mask_mod


def to_tiled(x: torch.Tensor, tile: tuple[int, ...]) -> torch.Tensor:
    """[B, *spatial, H, D] -> [B, N, H, D] with tokens in tile-major order (a copy)."""
    b, *spatial, h, d = x.shape
    split = [s for n, t in zip(spatial, tile) for s in (n // t, t)]
    r = len(spatial)
    x = x.reshape(b, *split, h, d)
    order = [0] + [1 + 2 * a for a in range(r)] + [2 + 2 * a for a in range(r)] + [2 * r + 1, 2 * r + 2]
    return x.permute(order).reshape(b, -1, h, d).contiguous()


def _natten(q, k, v, kernel, stride):
    try:
        import natten
    except ImportError:
        return "natten is not installed"
    fn = {2: natten.na2d, 3: natten.na3d}[q.dim() - 3]
    return lambda: fn(q, k, v, kernel_size=kernel, stride=stride)


@register_suite("na")
def na_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    cases = []
    # Every forward case first: a run cut short by a time limit still has all forward figures.
    for direction in ("forward", "forward+backward"):
        for name, (batch, heads, dim), shape, kernel, stride, tile in GPU_CASES if device == "cuda" else CPU_CASES:
            n, window = math.prod(shape), math.prod(kernel)
            fwd_flops = 4.0 * batch * heads * n * window * dim
            train = direction != "forward"
            gen = torch.Generator(device=device).manual_seed(0)
            q, k, v = (torch.randn(batch, *shape, heads, dim, device=device, dtype=dtype, generator=gen)
                       .requires_grad_(train) for _ in range(3))
            qt, kt, vt = (to_tiled(t.detach(), tile).requires_grad_(train) for t in (q, k, v))

            impls = {"foveal": lambda q=q, k=k, v=v, kernel=kernel, stride=stride:
                     ops.neighborhood_attention(q, k, v, kernel_size=kernel, stride=stride)}
            impls.update(dense_peers(q, k, v, device))
            impls["flex (tiled tokens)"] = flex_peer(qt, kt, vt, tiled_mask_mod(shape, kernel, stride, tile), device)
            impls["natten"] = _natten(q, k, v, kernel, stride) if device == "cuda" else "NATTEN timed on CUDA only"
            if train:
                grad = torch.randn(batch, *shape, heads, dim, device=device, dtype=dtype, generator=gen)
                for impl, fn in list(impls.items()):
                    if callable(fn):
                        uses_tiled = impl.startswith("flex")
                        g = to_tiled(grad, tile) if uses_tiled else grad
                        inputs = (qt, kt, vt) if uses_tiled else (q, k, v)
                        if impl.startswith("sdpa"):   # dense peers return [B, H, N, D]
                            g = g.flatten(1, -3).transpose(1, 2)
                        elif uses_tiled:
                            g = g.transpose(1, 2)
                        impls[impl] = with_backward(fn, inputs, g)
            cases.append(Case(
                name=f"{name} {direction}",
                shapes={"q": [batch, *shape, heads, dim], "kernel_size": list(kernel), "stride": list(stride)},
                impls=impls,
                flops=fwd_flops * (3.5 if train else 1.0),
                bytes=(4 if not train else 10) * q.numel() * q.element_size(),
                notes={"direction": direction},
                dense_impl="sdpa-cudnn (dense)" if device == "cuda" else "sdpa-math (dense)",
                flop_bound_x=n / window,
            ))
    return cases
