"""CogVideoX 1.0 / 1.5 (``CogVideoXTransformer3DModel``): joint attention with 3-D neighborhood
attention for the video tokens.

Every block's ``attn1`` attends one joint sequence, the text tokens FIRST, then the video tokens,
row-major over the patchified grid. The transformer's input is laid out ``[B, T, C, H, W]``
(frames before channels); the grid is (T, H // patch_size, W // patch_size) for CogVideoX 1.0
(``patch_size_t`` None: 2-D patches per frame) and (T // patch_size_t, H // patch_size,
W // patch_size) for CogVideoX 1.5.

Video-token queries attend their 3-D neighborhood of video tokens plus ALL text tokens (one
softmax, through ``additional_keys/values``); text-token queries stay dense over the whole
sequence. ``CogVideoXAttnProcessor2_0`` calls ``F.scaled_dot_product_attention`` itself (not
diffusers' dispatcher), and so does the dense text part here. No attention mask reaches these
processors from the transformer; one passed through ``attention_kwargs`` raises
``NotImplementedError`` in the sparse path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb

from .common import SparseProcessorBase, SparseState, bind_inputs

RANK = 3
ORIGINAL_PROCESSORS = (CogVideoXAttnProcessor2_0,)


def layers(transformer) -> list[tuple[int, str]]:
    """(block index, processor key) of every joint attention layer, in execution order."""
    return [(i, f"transformer_blocks.{i}.attn1.processor") for i in range(len(transformer.transformer_blocks))]


def record_inputs(state: SparseState, transformer, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook body: the post-patchify grid, the text length and the timestep."""
    inputs = bind_inputs(transformer, args, kwargs)
    x = inputs["hidden_states"]                       # B, T, C, H, W
    p, pt = transformer.config.patch_size, transformer.config.patch_size_t or 1
    state.grid = (x.shape[1] // pt, x.shape[3] // p, x.shape[4] // p)
    state.text_len = inputs["encoder_hidden_states"].shape[1]
    state.observe_timestep(inputs.get("timestep"))


class CogVideoXNeighborhoodAttnProcessor(SparseProcessorBase):
    """``CogVideoXAttnProcessor2_0`` with the attention call replaced: video queries run 3-D
    neighborhood attention over the video tokens with every text token as extra keys/values;
    text queries run the original dense ``F.scaled_dot_product_attention`` over all tokens.
    Projections, q/k norms, RoPE (video tokens only), the output projection and dtypes are the
    original's; dense warm-up steps run the original processor itself."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.state.dense_now:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        n_txt = encoder_hidden_states.shape[1]
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        b, s, _ = hidden_states.shape
        grid = self.sparse_grid(s - n_txt, attention_mask)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        h = attn.heads
        query = query.unflatten(2, (h, -1)).transpose(1, 2)      # B, heads, S, D (as the original)
        key = key.unflatten(2, (h, -1)).transpose(1, 2)
        value = value.unflatten(2, (h, -1)).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:       # RoPE on the video tokens only
            query = torch.cat([query[:, :, :n_txt], apply_rotary_emb(query[:, :, n_txt:], image_rotary_emb)], dim=2)
            if not attn.is_cross_attention:
                key = torch.cat([key[:, :, :n_txt], apply_rotary_emb(key[:, :, n_txt:], image_rotary_emb)], dim=2)

        # --- the replaced attention call ---
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))   # B, S, heads, D
        video_out = self.grid_attention(q[:, n_txt:], k[:, n_txt:], v[:, n_txt:], grid,
                                        k[:, :n_txt] if n_txt else None, v[:, :n_txt] if n_txt else None)
        if n_txt:
            text_out = F.scaled_dot_product_attention(query[:, :, :n_txt], key, value, dropout_p=0.0, is_causal=False)
            hidden_states = torch.cat([text_out.transpose(1, 2).to(video_out.dtype), video_out], dim=1)
        else:
            hidden_states = video_out
        # --- end ---
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split([n_txt, s - n_txt], dim=1)
        return hidden_states, encoder_hidden_states


PROCESSOR = CogVideoXNeighborhoodAttnProcessor
