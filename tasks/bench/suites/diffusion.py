"""``foveal bench diffusion``: one denoising step of a Wan2.1-1.3B-sized transformer, dense against
``zoo.diffusion.sparsify(method="neighborhood")`` and ``sparsify(method="radial")``.

BENCHMARKS.md's pipeline case: random weights in Wan2.1-T2V-1.3B's configuration (30 blocks,
12 heads of 128, FFN 8960, bf16), latents of a 480x832x81 video (21 x 60 x 104, a 21 x 30 x 52
token grid after the 1x2x2 patches) and of 720x1280x81 (21 x 45 x 80 tokens), 512 text tokens.
Rows: the dense transformer (diffusers' SDPA processors), the sparsified one with a 3-D window of
~5% of the grid (``foveal``), and radial attention with the release's Wan mask at decay 0.2
(block density 0.33 at 480p, 0.24 at 720p; ``foveal radial``). Each case's notes hold the
window, the densities and the PSNR of each sparsified step's output against the dense step's
from the same inputs. On the CPU a tiny configuration exercises the same code.
"""
from __future__ import annotations

import math

import torch

import ops

from ..runner import Case, register_suite

WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN_TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
# name, latent (frames, height, width), window (frames, rows, cols) of the token grid
GPU_CASES = [("wan-1.3b 480x832x81", (21, 60, 104), (7, 11, 21)),
             ("wan-1.3b 720x1280x81", (21, 90, 160), (7, 15, 35))]
CPU_CASES = [("wan-tiny", (3, 8, 10), (3, 3, 3))]


RADIAL_DECAY = 0.2


class _Switch:
    """One transformer shared by every case, in one mode at a time: ("dense",),
    ("neighborhood", window) or ("radial", block_size). Swaps the processors only when a call
    asks for another mode (the cases' rows interleave on the same model)."""

    def __init__(self, model):
        self.model, self.mode = model, ("dense",)

    def run(self, mode: tuple, inputs: dict):
        from zoo.diffusion import sparsify, unsparsify

        if mode != self.mode:
            if mode[0] == "neighborhood":
                sparsify(self.model, method="neighborhood", kernel_size=mode[1])
            elif mode[0] == "radial":
                sparsify(self.model, method="radial", decay_factor=RADIAL_DECAY, block_size=mode[1])
            else:
                unsparsify(self.model)
            self.mode = mode
        with torch.no_grad():
            return self.model(**inputs, return_dict=False)[0]


def _psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref, out = ref.float(), out.float()
    mse = (out - ref).square().mean().item()
    peak = (ref.max() - ref.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


@register_suite("diffusion")
def diffusion_suite(device: str, dtype: torch.dtype, **options) -> list[Case]:
    try:
        from diffusers import WanTransformer3DModel
    except ImportError as err:
        return [Case(name="wan step", shapes={}, impls={"foveal": f"diffusers is not installed ({err}): "
                                                                  "pip install -e '.[diffusion]'"})]
    config = WAN_1_3B if device == "cuda" else WAN_TINY
    torch.manual_seed(0)
    with torch.device(device):
        model = WanTransformer3DModel(**config).to(dtype).eval()
    cases = []
    switch = _Switch(model)
    for name, latent, window in GPU_CASES if device == "cuda" else CPU_CASES:
        gen = torch.Generator(device=device).manual_seed(0)
        inputs = dict(
            hidden_states=torch.randn(1, config["in_channels"], *latent, device=device, dtype=dtype, generator=gen),
            encoder_hidden_states=torch.randn(1, 512 if device == "cuda" else 7, config["text_dim"], device=device,
                                              dtype=dtype, generator=gen),
            timestep=torch.tensor([500], device=device))
        grid = tuple(n // p for n, p in zip(latent, config["patch_size"]))
        block = 128 if device == "cuda" else 16
        modes = {"foveal": ("neighborhood", window), "foveal radial": ("radial", block),
                 "dense (diffusers SDPA)": ("dense",)}
        dense_out = switch.run(modes["dense (diffusers SDPA)"], inputs)
        sparse_out = switch.run(modes["foveal"], inputs)
        radial_out = switch.run(modes["foveal radial"], inputs)
        density = math.prod(window) / math.prod(grid)
        radial_mask = ops.radial_block_mask(grid[0], grid[1] * grid[2], block, RADIAL_DECAY, "wan")
        notes = {"token_grid": list(grid), "window": list(window), "window_density": round(density, 4),
                 "psnr_sparse_vs_dense_db": round(_psnr(sparse_out, dense_out), 2),
                 "radial_decay_factor": RADIAL_DECAY, "radial_block_density": round(radial_mask.float().mean().item(), 4),
                 "psnr_radial_vs_dense_db": round(_psnr(radial_out, dense_out), 2)}
        del dense_out, sparse_out, radial_out
        cases.append(Case(
            name=f"{name} step", shapes={"latents": [1, config["in_channels"], *latent], "text_tokens":
                                         inputs["encoder_hidden_states"].shape[1]},
            impls={row: (lambda m=mode, i=inputs: switch.run(m, i)) for row, mode in modes.items()},
            notes=notes))
    return cases
