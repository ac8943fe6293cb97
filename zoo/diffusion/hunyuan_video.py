"""HunyuanVideo (``HunyuanVideoTransformer3DModel``): joint attention with 3-D neighborhood
attention for the video tokens.

Both the dual-stream (``transformer_blocks``) and single-stream (``single_transformer_blocks``)
blocks attend one joint sequence, the video tokens FIRST (row-major over the patchified grid
(frames // patch_size_t, height // patch_size, width // patch_size)), then the text tokens. The
token refiner inside ``context_embedder`` (text-only self-attention) is never swapped. The
image-to-video "token_replace" variant runs the same processors and is handled the same way.

Video-token queries attend their 3-D neighborhood of video tokens plus every VALID text token
(one softmax, through ``additional_keys/values``); text-token queries stay dense over the whole
sequence with the original padding mask (diffusers' dispatcher and backend).

The text padding mask: the transformer hands every block a key mask ``[B, 1, 1, N]`` that keeps
all video tokens and the first ``encoder_attention_mask[b].sum()`` text tokens of item ``b``. It is
handled exactly: the valid text length of each item is read from that mask (once per forward,
one host sync) and only those text tokens are passed as extra keys/values; when the lengths
differ within the batch, the neighborhood attention runs once per batch item. A mask of any
other form (not boolean, not ``[B, 1, 1, N]``, a masked video token, or text validity that is
not a prefix) raises ``NotImplementedError``.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

from .common import SparseProcessorBase, SparseState, bind_inputs

RANK = 3
ORIGINAL_PROCESSORS = (HunyuanVideoAttnProcessor2_0,)


def layers(transformer) -> list[tuple[int, str]]:
    """(layer index, processor key) in execution order: the dual-stream blocks, then the
    single-stream blocks (``dense_layers`` index this list)."""
    dual = [f"transformer_blocks.{i}.attn.processor" for i in range(len(transformer.transformer_blocks))]
    single = [f"single_transformer_blocks.{i}.attn.processor"
              for i in range(len(transformer.single_transformer_blocks))]
    return list(enumerate(dual + single))


def record_inputs(state: SparseState, transformer, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook body: the post-patchify grid, the text length and the timestep."""
    inputs = bind_inputs(transformer, args, kwargs)
    x = inputs["hidden_states"]                       # B, C, F, H, W
    p, pt = transformer.config.patch_size, transformer.config.patch_size_t
    state.grid = (x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p)
    state.text_len = inputs["encoder_hidden_states"].shape[1]
    state.observe_timestep(inputs.get("timestep"))


def _valid_text_lengths(state: SparseState, name: str, mask, batch: int, n_vid: int, n_txt: int):
    """Valid text tokens per batch item (a tuple of ``batch`` ints) from the transformer's key mask,
    or None when there is no mask. Checked and read once per mask tensor (the same tensor reaches
    every block of one forward)."""
    if mask is None:
        return None
    cached = state.cache.get("text_mask")
    if cached is not None and cached[0] is mask:
        return cached[1]
    if (mask.dtype != torch.bool or mask.ndim != 4 or mask.shape[1:3] != (1, 1)
            or mask.shape[3] != n_vid + n_txt or mask.shape[0] not in (1, batch)):
        raise NotImplementedError(f"{name}: neighborhood attention takes only HunyuanVideo's boolean key mask "
                                  f"[B, 1, 1, {n_vid + n_txt}]; got a {mask.dtype} mask of shape {tuple(mask.shape)}")
    keep = mask[:, 0, 0]
    lengths = keep[:, n_vid:].sum(-1)
    prefix = torch.arange(n_txt, device=keep.device)[None] < lengths[:, None]
    ok = keep[:, :n_vid].all() & (keep[:, n_vid:] == prefix).all()
    *lengths, ok = torch.cat([lengths, ok[None].long()]).tolist()
    if not ok:
        raise NotImplementedError(f"{name}: neighborhood attention needs every video token unmasked and the valid "
                                  "text tokens of each item to be a prefix (as HunyuanVideoTransformer3DModel builds "
                                  "the mask from encoder_attention_mask)")
    lengths = tuple(lengths) * (batch if len(lengths) == 1 else 1)
    state.cache["text_mask"] = (mask, lengths)
    return lengths


class HunyuanVideoNeighborhoodAttnProcessor(SparseProcessorBase):
    """``HunyuanVideoAttnProcessor2_0`` with the attention call replaced: video queries run 3-D
    neighborhood attention over the video tokens with every valid text token as extra
    keys/values; text queries run the original dense attention (diffusers' dispatcher, the
    original padding mask) over all tokens. Projections, q/k norms, RoPE (video tokens only),
    output projections and dtypes are the original's; dense warm-up steps run the original
    processor itself. Text padding is handled exactly (see the module docstring)."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.state.dense_now:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        n_txt = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else 0
        single_stream = attn.add_q_proj is None and n_txt > 0
        if single_stream:                      # single-stream: one projection for [video, text]
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)

        query = attn.to_q(hidden_states).unflatten(2, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if image_rotary_emb is not None:       # RoPE on the video tokens only
            if single_stream:
                query = torch.cat([apply_rotary_emb(query[:, :-n_txt], image_rotary_emb, sequence_dim=1),
                                   query[:, -n_txt:]], dim=1)
                key = torch.cat([apply_rotary_emb(key[:, :-n_txt], image_rotary_emb, sequence_dim=1),
                                 key[:, -n_txt:]], dim=1)
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if attn.add_q_proj is not None and n_txt > 0:   # dual-stream: text projections of their own
            encoder_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            if attn.norm_added_q is not None:
                encoder_query = attn.norm_added_q(encoder_query)
            if attn.norm_added_k is not None:
                encoder_key = attn.norm_added_k(encoder_key)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)

        # --- the replaced attention call ---
        b, s, h, _ = query.shape
        n_vid = s - n_txt
        grid = self.sparse_grid(n_vid, None)
        lengths = _valid_text_lengths(self.state, self.name, attention_mask, b, n_vid, n_txt)

        def video_attention(items: slice, n_valid: int) -> torch.Tensor:
            q, k, v = query[items], key[items], value[items]
            extra_k = k[:, n_vid:n_vid + n_valid] if n_valid else None
            extra_v = v[:, n_vid:n_vid + n_valid] if n_valid else None
            return self.grid_attention(q[:, :n_vid], k[:, :n_vid], v[:, :n_vid], grid, extra_k, extra_v)

        if lengths is None or len(set(lengths)) == 1:
            video_out = video_attention(slice(None), n_txt if lengths is None else lengths[0])
        else:                                  # valid text lengths differ: one call per item
            video_out = torch.cat([video_attention(slice(i, i + 1), n) for i, n in enumerate(lengths)])
        if n_txt:
            text_out = dispatch_attention_fn(query[:, n_vid:], key, value, attn_mask=attention_mask,
                                             backend=self._attention_backend, parallel_config=None)
            hidden_states = torch.cat([video_out, text_out.to(video_out.dtype)], dim=1)
        else:
            hidden_states = video_out
        # --- end ---
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = hidden_states[:, :n_vid], hidden_states[:, n_vid:]
            if getattr(attn, "to_out", None) is not None:
                hidden_states = attn.to_out[0](hidden_states)
                hidden_states = attn.to_out[1](hidden_states)
            if getattr(attn, "to_add_out", None) is not None:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


PROCESSOR = HunyuanVideoNeighborhoodAttnProcessor
