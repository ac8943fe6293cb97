"""Wan 2.x (``WanTransformer3DModel``): 3-D neighborhood attention in ``attn1``.

``attn1`` is self-attention over the video tokens, laid out row-major over the patchified grid
(frames // p_t, height // p_h, width // p_w). ``attn2`` (text / image cross-attention) is never
swapped.
"""
from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from .common import SparseProcessorBase, SparseState, bind_inputs

RANK = 3
ORIGINAL_PROCESSORS = (WanAttnProcessor,)


def layers(transformer) -> list[tuple[int, str]]:
    """(block index, processor key) of every self-attention layer, in execution order."""
    return [(i, f"blocks.{i}.attn1.processor") for i in range(len(transformer.blocks))]


def record_inputs(state: SparseState, transformer, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook body: the post-patchify grid and the timestep."""
    inputs = bind_inputs(transformer, args, kwargs)
    x = inputs["hidden_states"]                       # B, C, F, H, W
    pt, ph, pw = transformer.config.patch_size
    state.grid = (x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw)
    state.text_len = 0
    state.observe_timestep(inputs.get("timestep"))


def _apply_rotary_emb(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on interleaved channel pairs (x[2i], x[2i+1]); its cos/sin tables
    repeat each frequency twice, so one entry per pair is read. [B, N, heads, D] -> same, x's dtype."""
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).type_as(x)


class WanNeighborhoodAttnProcessor(SparseProcessorBase):
    """``WanAttnProcessor`` for self-attention with the attention call replaced by 3-D
    neighborhood attention over (frames', height', width'). Projections, q/k RMS norms, RoPE, the
    output projection and dtypes are exactly the original's; dense warm-up steps run the original
    processor itself."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.state.dense_now or encoder_hidden_states is not None or attn.add_k_proj is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        grid = self.sparse_grid(hidden_states.shape[1], attention_mask)

        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _apply_rotary_emb(query, *rotary_emb)
            key = _apply_rotary_emb(key, *rotary_emb)

        hidden_states = self.grid_attention(query, key, value, grid).flatten(2, 3)
        hidden_states = hidden_states.type_as(query)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


PROCESSOR = WanNeighborhoodAttnProcessor
