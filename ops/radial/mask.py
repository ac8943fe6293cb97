"""Radial attention's block mask (Radial Attention, arXiv 2506.19852; the official release's rules).

Attention between frames decays with their distance: for query frame i and key frame j at
distance ``d = |i - j|``, a token sees the tokens of frame j whose in-frame index lies within a
window that halves each time ``d`` passes a power of two; once the window would fall below one
block, only every ``split``-th frame pair is kept (fewer diagonals instead of thinner bands).
Key frame 0 is an attention sink (seen in full). The token mask of every frame pair is shrunk to
``block_size`` blocks the way the release does (a block is kept when more than 60% of its
non-empty columns are more than a third full) and OR-ed into the sequence's block grid.

Computed in closed form per frame pair (a band's column counts are interval overlaps), not by
materialising ``tokens_per_frame ** 2`` booleans per pair: 720p Wan (21 x 3600 tokens) takes
milliseconds. ``tests/ops/test_radial.py`` checks it against the literal token-level procedure.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["MODELS", "check_radial_args", "radial_block_mask", "radial_window"]

MODELS = ("wan", "hunyuan")


def _bit_length(n: int) -> int:
    return int(n).bit_length()


def radial_window(dist: int, tokens_per_frame: int, block_size: int, decay_factor: float, model: str) -> float:
    """Half-width of the in-frame band a query frame sees of a key frame ``dist`` frames away
    (compared as ``|col - row| <= window``)."""
    if model == "wan":
        if dist == 0:
            return tokens_per_frame
        if dist == 1:
            return tokens_per_frame // 2
    elif dist <= 1:   # hunyuan
        return tokens_per_frame
    decay = 2 ** _bit_length(tokens_per_frame) / 2 ** _bit_length(dist) * decay_factor
    return max(decay, block_size)


def _pair_kept(dist: int, tokens_per_frame: int, block_size: int) -> bool:
    """Whether a frame pair survives the diagonal split (applied once the undecayed window is
    narrower than one block: then only pairs whose distance is a multiple of the split remain)."""
    decay = 2 ** _bit_length(tokens_per_frame) / 2 ** _bit_length(dist)
    if decay >= block_size:
        return True
    return dist % int(block_size / decay) == 0


def _shrink_pair(window: float | None, tokens_per_frame: int, row_offset: int, col_offset: int,
                 block_size: int) -> torch.Tensor:
    """bool [nb, nb] (nb = ceil(tokens_per_frame / block_size)): one frame pair's token mask
    (band ``|c - r| <= window``, or full when ``window`` is None) placed at (row_offset,
    col_offset) inside a block-aligned frame, shrunk to blocks by the release's rule."""
    tpf, bs = tokens_per_frame, block_size
    nb = -(-tpf // bs)
    # rows of each row block inside the frame: [lo, hi)
    starts = torch.arange(nb) * bs - row_offset
    lo, hi = starts.clamp(0, tpf), (starts + bs).clamp(0, tpf)
    col = torch.arange(nb * bs) - col_offset                     # in-frame column of each padded column
    col_ok = (col >= 0) & (col < tpf)
    if window is None:
        count = (hi - lo)[:, None].expand(nb, nb * bs)
    else:
        w = int(window)   # integer distances: |c - r| <= window  <=>  |c - r| <= floor(window)
        first = torch.maximum(lo[:, None], col[None, :] - w)
        last = torch.minimum(hi[:, None], col[None, :] + w + 1)
        count = (last - first).clamp(min=0)
    count = torch.where(col_ok[None, :], count, 0).reshape(nb, nb, bs)
    density = count / bs                                         # float32, as the release computes it
    nonzero = (density > 0).sum(-1)
    dense = (density > 1 / 3).sum(-1)
    return dense / (nonzero + 1e-9) > 0.6


@functools.lru_cache(maxsize=32)
def _radial_block_mask(num_frames: int, tokens_per_frame: int, text_tokens: int, block_size: int,
                       decay_factor: float, model: str) -> torch.Tensor:
    tpf, bs = tokens_per_frame, block_size
    video = num_frames * tpf
    blocks = -(-(video + text_tokens) // bs)
    nb = -(-tpf // bs)
    mask = torch.zeros(blocks + nb, blocks + nb, dtype=torch.bool)   # spare rows/columns: pairs overhanging the end
    shrunk: dict[tuple, torch.Tensor] = {}
    for i in range(num_frames):
        for j in range(num_frames):
            dist = abs(i - j)
            if j == 0:
                window = None                                    # the attention sink: key frame 0 in full
            elif not _pair_kept(dist, tpf, bs):
                continue                                         # an all-false pair adds nothing
            else:
                window = radial_window(dist, tpf, bs, decay_factor, model)
                window = None if window >= tpf else window       # a band this wide is the full frame
            key = (window, (i * tpf) % bs, (j * tpf) % bs)
            if key not in shrunk:
                shrunk[key] = _shrink_pair(window, tpf, key[1], key[2], bs)
            r, c = (i * tpf) // bs, (j * tpf) // bs
            mask[r:r + nb, c:c + nb] |= shrunk[key]
    mask = mask[:blocks, :blocks]
    border = video // bs                                         # text and the block straddling the end: dense
    mask[border:] = True
    mask[:, border:] = True
    return mask


def check_radial_args(num_frames: int, tokens_per_frame: int, block_size: int, decay_factor: float, model: str,
                      text_tokens: int) -> None:
    """The argument rules of :func:`radial_block_mask` (each error names its argument)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    for name, n, low in (("num_frames", num_frames, 1), ("tokens_per_frame", tokens_per_frame, 1),
                         ("block_size", block_size, 1), ("text_tokens", text_tokens, 0)):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{name} must be an int, got {type(n).__name__}")
        if n < low:
            raise ValueError(f"{name} must be >= {low}, got {n}")
    if isinstance(decay_factor, bool) or not isinstance(decay_factor, (int, float)) or not decay_factor > 0:
        raise ValueError(f"decay_factor must be a positive number, got {decay_factor!r}")


def radial_block_mask(num_frames: int, tokens_per_frame: int, block_size: int = 128, decay_factor: float = 1.0,
                      model: str = "wan", text_tokens: int = 0, device: torch.device | str | None = None
                      ) -> torch.Tensor:
    """bool [NB, NB] block mask of radial attention over ``num_frames * tokens_per_frame`` video
    tokens (frame-major) followed by ``text_tokens`` text tokens; NB = ceil(total / block_size).

    Args:
        num_frames, tokens_per_frame: the latent video's frames and tokens per frame (after
            patchifying), e.g. 21 x 1560 for Wan 2.1 at 480x832x81.
        block_size: the mask's block (the release uses 128).
        decay_factor: scales the decayed windows (the release's scripts: 0.2 for Wan2.1-14B,
            0.95 for HunyuanVideo; 1 is the paper's default).
        model: "wan" (adjacent frames see half a frame) or "hunyuan" (adjacent frames in full).
        text_tokens: tokens after the video (HunyuanVideo's text), attended densely both ways.
    """
    check_radial_args(num_frames, tokens_per_frame, block_size, decay_factor, model, text_tokens)
    mask = _radial_block_mask(num_frames, tokens_per_frame, text_tokens, block_size, float(decay_factor), model)
    return mask.clone() if device is None else mask.to(device, copy=True)
