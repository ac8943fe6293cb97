"""LTX-Video (``LTXVideoTransformer3DModel``): 3-D neighborhood attention in ``attn1``.

``attn1`` is self-attention over the packed video tokens, row-major over the token grid
(num_frames, height, width) that the transformer's ``forward`` receives as explicit arguments
(LTXPipeline passes the latent frame count, height and width; LTX's patch sizes are 1, and the
RoPE positions are built from the same three numbers). ``attn2`` (text cross-attention) is never
swapped. A call without ``num_frames`` / ``height`` / ``width`` (e.g. ``video_coords`` only, as the
condition pipeline does) has no grid, and its sparse layers raise a ``RuntimeError``.
"""
from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor, apply_rotary_emb

from .common import SparseProcessorBase, SparseState, bind_inputs

RANK = 3
ORIGINAL_PROCESSORS = (LTXVideoAttnProcessor,)


def layers(transformer) -> list[tuple[int, str]]:
    """(block index, processor key) of every self-attention layer, in execution order."""
    return [(i, f"transformer_blocks.{i}.attn1.processor") for i in range(len(transformer.transformer_blocks))]


def record_inputs(state: SparseState, transformer, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook body: the token grid from ``num_frames`` / ``height`` / ``width`` and the
    timestep."""
    inputs = bind_inputs(transformer, args, kwargs)
    dims = [inputs.get(k) for k in ("num_frames", "height", "width")]
    state.grid = None if any(d is None for d in dims) else tuple(int(d) for d in dims)
    state.text_len = 0
    state.observe_timestep(inputs.get("timestep"))


class LTXVideoNeighborhoodAttnProcessor(SparseProcessorBase):
    """``LTXVideoAttnProcessor`` for self-attention with the attention call replaced by 3-D
    neighborhood attention over (frames, height, width). Projections, q/k RMS norms, RoPE, the
    output projection and dtypes are exactly the original's; dense warm-up steps (and any
    cross-attention call) run the original processor itself."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.state.dense_now or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        grid = self.sparse_grid(hidden_states.shape[1], attention_mask)

        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        value = attn.to_v(hidden_states)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb)
            key = apply_rotary_emb(key, image_rotary_emb)

        query, key, value = (t.unflatten(2, (attn.heads, -1)) for t in (query, key, value))
        hidden_states = self.grid_attention(query, key, value, grid).flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states


PROCESSOR = LTXVideoNeighborhoodAttnProcessor
