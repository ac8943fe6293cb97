"""FLUX (``FluxTransformer2DModel``): joint attention with 2-D neighborhood attention for the
image tokens.

Both the double-stream (``transformer_blocks``) and single-stream (``single_transformer_blocks``)
blocks run one joint sequence, text tokens first, then the image tokens of the packed latents in
row-major order over the (height // 16, width // 16) grid that ``img_ids`` spells out. Image-token
queries attend their 2-D neighborhood of image tokens plus ALL text tokens (one softmax, through
``additional_keys/values``); text-token queries stay dense over the whole sequence.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections

from .common import SparseProcessorBase, SparseState, bind_inputs

RANK = 2
ORIGINAL_PROCESSORS = (FluxAttnProcessor,)


def layers(transformer) -> list[tuple[int, str]]:
    """(layer index, processor key) in execution order: the double-stream blocks, then the
    single-stream blocks (``dense_layers`` index this list)."""
    double = [f"transformer_blocks.{i}.attn.processor" for i in range(len(transformer.transformer_blocks))]
    single = [f"single_transformer_blocks.{i}.attn.processor"
              for i in range(len(transformer.single_transformer_blocks))]
    return list(enumerate(double + single))


def _image_grid(img_ids: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of the image tokens; ``img_ids`` [N, 3] must be FluxPipeline's row-major grid
    (ids[:, 1] the row, ids[:, 2] the column, both from 0)."""
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    rows, cols = (int(v) + 1 for v in img_ids[-1, 1:3].float().tolist())
    ok = rows > 0 and cols > 0 and rows * cols == img_ids.shape[0]
    if ok:
        r = torch.arange(rows, device=img_ids.device).repeat_interleave(cols)
        c = torch.arange(cols, device=img_ids.device).repeat(rows)
        ok = bool(((img_ids[:, 1].float() == r) & (img_ids[:, 2].float() == c)).all())
    if not ok:
        raise ValueError("FLUX neighborhood attention needs the image tokens to form one row-major grid "
                         "(img_ids[:, 1] = row, img_ids[:, 2] = column, as FluxPipeline builds them); these "
                         f"{img_ids.shape[0]} img_ids do not (e.g. Kontext's extra reference-image tokens)")
    return rows, cols


def record_inputs(state: SparseState, transformer, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook body: the image-token grid (from ``img_ids``, checked once per ids
    tensor), the text length (from ``txt_ids``) and the timestep."""
    inputs = bind_inputs(transformer, args, kwargs)
    img_ids, txt_ids = inputs["img_ids"], inputs["txt_ids"]
    cached = state.cache.get("img_ids")
    if cached is None or cached[0] is not img_ids:
        state.cache["img_ids"] = (img_ids, _image_grid(img_ids))
    state.grid = state.cache["img_ids"][1]
    state.text_len = txt_ids.shape[-2]
    state.observe_timestep(inputs.get("timestep"))


class FluxNeighborhoodAttnProcessor(SparseProcessorBase):
    """``FluxAttnProcessor`` with the attention call replaced: image queries run 2-D
    neighborhood attention over the image tokens with every text token as extra keys/values;
    text queries run the original dense attention (through diffusers' dispatcher and backend)
    over all tokens. Everything else (projections, q/k norms, RoPE, output projections, dtypes)
    is the original's; dense warm-up steps run the original processor itself."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.state.dense_now:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )

        query = query.unflatten(-1, (-1, attn.head_dim))
        key = key.unflatten(-1, (-1, attn.head_dim))
        value = value.unflatten(-1, (-1, attn.head_dim))

        query = attn.norm_q(query)
        key = attn.norm_k(key)

        if attn.added_kv_proj_dim is not None:
            encoder_query = encoder_query.unflatten(-1, (-1, attn.head_dim))
            encoder_key = encoder_key.unflatten(-1, (-1, attn.head_dim))
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))

            encoder_query = attn.norm_added_q(encoder_query)
            encoder_key = attn.norm_added_k(encoder_key)

            query = torch.cat([encoder_query, query], dim=1)
            key = torch.cat([encoder_key, key], dim=1)
            value = torch.cat([encoder_value, value], dim=1)

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        # --- the replaced attention call ---
        n_txt = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else self.state.text_len
        b, s, h, _ = query.shape
        grid = self.sparse_grid(s - n_txt, attention_mask)
        image_out = self.grid_attention(query[:, n_txt:], key[:, n_txt:], value[:, n_txt:], grid,
                                        key[:, :n_txt] if n_txt else None, value[:, :n_txt] if n_txt else None)
        if n_txt:
            text_out = dispatch_attention_fn(query[:, :n_txt], key, value, attn_mask=None,
                                             backend=self._attention_backend, parallel_config=None)
            hidden_states = torch.cat([text_out.to(image_out.dtype), image_out], dim=1)
        else:
            hidden_states = image_out
        # --- end ---
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
            )
            hidden_states = attn.to_out[0](hidden_states.contiguous())
            hidden_states = attn.to_out[1](hidden_states)
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())

            return hidden_states, encoder_hidden_states
        else:
            return hidden_states


PROCESSOR = FluxNeighborhoodAttnProcessor
