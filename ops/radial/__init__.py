"""Radial attention (video diffusion, energy decay): block-sparse attention with the radial mask.

``radial_attention(query, key, value, num_frames, decay_factor=1.0, model="wan")`` on heads-last
``[B, N, H, D]`` token sequences, N = frames x tokens per frame (+ text tokens after the video).
The mask (``mask.py``) is built once per geometry and kept with its KV lists per device; the
attention runs the shared block-sparse core (``ops.block_sparse``), forward and backward.
"""
from __future__ import annotations

import functools

import torch

from ..block_sparse import attend_lists, block_mask_to_index, check_block_sparse_inputs, visit_order
from .mask import MODELS, _radial_block_mask, check_radial_args, radial_block_mask, radial_window

__all__ = ["MODELS", "radial_attention", "radial_block_mask", "radial_index", "radial_window"]


@functools.lru_cache(maxsize=64)
def _radial_lists(num_frames: int, tokens_per_frame: int, text_tokens: int, block_size: int, decay_factor: float,
                  model: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask's KV lists and their visit order, on ``device``."""
    mask = _radial_block_mask(num_frames, tokens_per_frame, text_tokens, block_size, decay_factor, model)
    index = block_mask_to_index(mask[None])
    return index.to(device), visit_order(index, index.shape[-2]).to(device)


def radial_index(num_frames: int, tokens_per_frame: int, block_size: int = 128, decay_factor: float = 1.0,
                 model: str = "wan", text_tokens: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """The radial mask's KV lists (int32 [1, NB, L], see ``ops.block_sparse.block_mask_to_index``),
    cached per geometry and device: a diffusion step's layers share one."""
    check_radial_args(num_frames, tokens_per_frame, block_size, decay_factor, model, text_tokens)
    return _radial_lists(num_frames, tokens_per_frame, text_tokens, block_size, float(decay_factor), model,
                         torch.device(device))[0]


def radial_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_frames: int,
    decay_factor: float = 1.0,
    model: str = "wan",
    text_tokens: int = 0,
    block_size: int = 128,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Radial attention over a frame-major video token sequence.

    Args:
        query, key, value: [B, N, H, D], N = num_frames * tokens_per_frame + text_tokens (video
            tokens frame by frame, then text), one shape, any strides.
        num_frames: latent frames; tokens_per_frame is (N - text_tokens) / num_frames.
        decay_factor: scales the decayed windows (0.2: the release's Wan2.1-14B setting, block
            density 0.33 at 480p and 0.24 at 720p; 0.95 its HunyuanVideo setting).
        model: "wan" or "hunyuan" (how adjacent frames are treated, see ``radial_window``).
        text_tokens: tokens after the video, attended densely both ways.
        block_size: the mask's block size (128 as in the release).
        scale: softmax scale, default D ** -0.5.
        return_lse: also return the natural-log sum-exp [B, N, H] (float32, differentiable).
    Returns:
        out [B, N, H, D] (and the LSE).
    """
    check_block_sparse_inputs(query, key, value, block_size, scale)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if isinstance(text_tokens, bool) or not isinstance(text_tokens, int) or text_tokens < 0:
        raise ValueError(f"text_tokens must be a non-negative int, got {text_tokens!r}")
    video = query.shape[1] - text_tokens
    if video < num_frames or video % num_frames:
        raise ValueError(f"the {video} video tokens (N={query.shape[1]} minus text_tokens={text_tokens}) must be "
                         f"a positive multiple of num_frames={num_frames}")
    check_radial_args(num_frames, video // num_frames, block_size, decay_factor, model, text_tokens)
    index, order = _radial_lists(num_frames, video // num_frames, text_tokens, block_size, float(decay_factor), model,
                                 query.device)
    return attend_lists(query, key, value, index, order, block_size, scale, return_lse)
