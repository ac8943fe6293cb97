"""zoo.diffusion: swap a diffusers transformer's self-attention for sparse attention, and back.

    from zoo.diffusion import sparsify, unsparsify
    sparsify(pipe, method="neighborhood", kernel_size=(3, 11, 11), dense_steps=10)
    video = pipe(prompt, ...).frames
    unsparsify(pipe)            # the original processor objects are back

Two methods: ``"neighborhood"`` (NATTEN semantics, ``ops.neighborhood_attention``; windows per
grid axis) and ``"radial"`` (Radial Attention, ``ops.radial_attention``: frame-distance decayed
bands on 128-token blocks over the frame-major token sequence, the video transformers only):

    sparsify(pipe, method="radial", decay_factor=0.2, dense_layers=[0], dense_steps=12)

Supported transformers:

- ``WanTransformer3DModel`` (Wan 2.1 / 2.2): every block's ``attn1`` (video self-attention)
  runs 3-D neighborhood attention over the patchified grid (frames // p_t, height // p_h,
  width // p_w); ``kernel_size`` etc. are per (t, h, w). ``attn2`` (cross-attention) is untouched.
  A pipeline's ``transformer_2`` (Wan 2.2 A14B) is sparsified with the same options.
- ``FluxTransformer2DModel``: the joint attention of every double- and single-stream block; image
  queries attend their 2-D (rows, cols) neighborhood of image tokens plus all text tokens in
  one softmax, text queries stay dense over everything. The grid is read from ``img_ids``.
- ``HunyuanVideoTransformer3DModel``: the joint attention of every dual- and single-stream block
  (video tokens first, text last); video queries attend their 3-D neighborhood over
  (frames // patch_size_t, height // patch_size, width // patch_size) plus every VALID text token
  in one softmax, text queries stay dense with the original padding mask. Text padding is exact:
  only each item's valid text tokens are extra keys (one NA call per item when the valid lengths
  differ within the batch). The token refiner is untouched.
- ``CogVideoXTransformer3DModel`` (1.0 and 1.5): every block's ``attn1`` joint attention (text
  first); video queries attend their 3-D neighborhood over (frames // patch_size_t, height //
  patch_size, width // patch_size) (input ``[B, T, C, H, W]``; ``patch_size_t`` 1 for CogVideoX
  1.0) plus all text tokens, text queries stay dense (``F.scaled_dot_product_attention``, as the
  original processor).
- ``LTXVideoTransformer3DModel``: every block's ``attn1`` (video self-attention) runs 3-D
  neighborhood attention over the token grid given by ``forward(num_frames=, height=, width=)``;
  ``attn2`` (cross-attention) is untouched.

How it works: the swapped attention modules get small diffusers-style processors
(``zoo.diffusion.wan.WanNeighborhoodAttnProcessor``, ``zoo.diffusion.flux.FluxNeighborhoodAttnProcessor``,
``zoo.diffusion.hunyuan_video.HunyuanVideoNeighborhoodAttnProcessor``,
``zoo.diffusion.cogvideox.CogVideoXNeighborhoodAttnProcessor``,
``zoo.diffusion.ltx_video.LTXVideoNeighborhoodAttnProcessor``)
that repeat the original processor's projections, norms, RoPE and output projection and replace
only the attention call; each keeps the original processor and calls it for dense steps. A
forward pre-hook on the transformer records the token grid (and step) of each call. Nothing
else in the pipeline changes.

Windows are never clamped: a ``kernel_size * dilation`` larger than the token grid on some axis
raises a ``ValueError`` naming the layer, the window and the grid when the transformer runs
(the grid is only known then). ``stride`` and ``dilation`` follow NATTEN (``stride <= kernel_size``).
Not supported in the sparse path: attention masks (other than HunyuanVideo's text padding mask)
and context parallelism (clear errors).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .common import NAOptions, RadialOptions, SparseProcessorBase, SparseState, per_axis

__all__ = ["METHODS", "SUPPORTED_TRANSFORMERS", "sparsify", "unsparsify", "is_sparsified", "reset_steps"]

METHODS = ("neighborhood", "radial")
SUPPORTED_TRANSFORMERS = ("WanTransformer3DModel", "FluxTransformer2DModel", "HunyuanVideoTransformer3DModel",
                          "CogVideoXTransformer3DModel", "LTXVideoTransformer3DModel")
_ATTR = "_foveal_sparsity"


@dataclass
class _Record:
    method: str
    options: NAOptions | RadialOptions
    state: SparseState
    hook: torch.utils.hooks.RemovableHandle


def _family(transformer):
    """The module (``wan`` / ``flux`` / ``hunyuan_video`` / ``cogvideox`` / ``ltx_video``) that handles
    this transformer's class."""
    from diffusers import (CogVideoXTransformer3DModel, FluxTransformer2DModel, HunyuanVideoTransformer3DModel,
                           LTXVideoTransformer3DModel, WanTransformer3DModel)
    if isinstance(transformer, WanTransformer3DModel):
        from . import wan
        return wan
    if isinstance(transformer, FluxTransformer2DModel):
        from . import flux
        return flux
    if isinstance(transformer, HunyuanVideoTransformer3DModel):
        from . import hunyuan_video
        return hunyuan_video
    if isinstance(transformer, CogVideoXTransformer3DModel):
        from . import cogvideox
        return cogvideox
    if isinstance(transformer, LTXVideoTransformer3DModel):
        from . import ltx_video
        return ltx_video
    raise NotImplementedError(f"zoo.diffusion.sparsify does not support {type(transformer).__name__}; "
                              f"supported transformers: {', '.join(SUPPORTED_TRANSFORMERS)}")


def _transformers(pipe_or_transformer) -> list[torch.nn.Module]:
    if isinstance(pipe_or_transformer, torch.nn.Module):
        return [pipe_or_transformer]
    transformer = getattr(pipe_or_transformer, "transformer", None)
    if not isinstance(transformer, torch.nn.Module):
        raise ValueError(f"expected a diffusers pipeline with a .transformer or a transformer model, got "
                         f"{type(pipe_or_transformer).__name__}")
    second = getattr(pipe_or_transformer, "transformer_2", None)   # Wan 2.2 A14B: low-noise expert
    return [transformer] + ([second] if isinstance(second, torch.nn.Module) else [])


def _original(processor):
    return processor.original if isinstance(processor, SparseProcessorBase) else processor


def sparsify(pipe_or_transformer, method: str = "neighborhood", kernel_size=None, stride=1, dilation=1,
             dense_layers: Iterable[int] = (), dense_steps: int = 0, decay_factor: float = 1.0,
             radial_model: str | None = None, block_size: int = 128):
    """Swap the self-attention processors of a pipeline's transformer (or of the transformer
    itself) for sparse ones; returns the same object.

    Args:
        method: ``"neighborhood"`` or ``"radial"``.
        kernel_size, stride, dilation: (neighborhood) an int or one per grid axis: (frames, height,
            width) for Wan, HunyuanVideo, CogVideoX and LTX-Video, (rows, cols) for FLUX, in tokens
            after patchify.
        decay_factor, radial_model, block_size: (radial) the window decay (the release's scripts:
            0.2 for Wan2.1-14B, 0.95 for HunyuanVideo), the adjacent-frame rule ("wan": half a
            frame, "hunyuan": the whole frame; default "wan" for Wan, "hunyuan" for the others)
            and the mask's block size. Text tokens of joint attention are attended densely.
        dense_layers: indices of attention layers kept dense (their processors are not swapped):
            Wan's, CogVideoX's and LTX-Video's block index; FLUX's double-stream (HunyuanVideo's dual-stream)
            blocks 0..N-1 then single-stream blocks N..N+M-1.
        dense_steps: the first ``dense_steps`` denoising steps of each pipeline call run the
            original dense processors. Steps are counted from the timesteps the transformer sees:
            a lower timestep than the last call's is the next step, an equal one the same step
            (CFG's second pass), a higher one starts a new pipeline call (step 0). Transformers of
            one pipeline share the count; ``reset_steps`` restarts it by hand.

    Calling it again replaces the previous sparsification (no stacking); ``unsparsify`` restores
    the original processor objects.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; supported: {', '.join(METHODS)}")
    if method == "neighborhood" and kernel_size is None:
        raise ValueError("method='neighborhood' needs kernel_size (an int or one per grid axis)")
    if method == "radial":
        from ops.radial import MODELS
        if kernel_size is not None:
            raise ValueError("method='radial' takes no kernel_size (its windows follow the frame distance); "
                             "use decay_factor")
        if isinstance(decay_factor, bool) or not isinstance(decay_factor, (int, float)) or not decay_factor > 0:
            raise ValueError(f"decay_factor must be a positive number, got {decay_factor!r}")
        if radial_model is not None and radial_model not in MODELS:
            raise ValueError(f"radial_model must be one of {MODELS} or None, got {radial_model!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16:
            raise ValueError(f"block_size must be an int >= 16, got {block_size!r}")
    if not isinstance(dense_steps, int) or isinstance(dense_steps, bool) or dense_steps < 0:
        raise ValueError(f"dense_steps must be a non-negative int, got {dense_steps!r}")
    dense = set()
    for i in dense_layers:
        if not isinstance(i, int) or isinstance(i, bool):
            raise ValueError(f"dense_layers must hold ints, got {i!r}")
        dense.add(i)

    transformers = _transformers(pipe_or_transformer)
    plans = []   # validate everything before changing anything
    for transformer in transformers:
        family = _family(transformer)
        rank = family.RANK
        if method == "radial":
            if rank != 3:
                raise ValueError(f"method='radial' needs a video transformer (frames, height, width); "
                                 f"{type(transformer).__name__} attends a {rank}-D grid")
            model = radial_model or ("wan" if family.__name__.endswith(".wan") else "hunyuan")
            options = RadialOptions(float(decay_factor), model, block_size)
        else:
            options = NAOptions(per_axis(kernel_size, rank, "kernel_size"), per_axis(stride, rank, "stride"),
                                per_axis(dilation, rank, "dilation"))
            for axis, (k, s) in enumerate(zip(options.kernel_size, options.stride)):
                if s > k:
                    raise ValueError(f"stride ({s}) must be <= kernel_size ({k}) on axis {axis}")
        layers = family.layers(transformer)
        bad = sorted(i for i in dense if not 0 <= i < len(layers))
        if bad:
            raise ValueError(f"dense_layers {bad} out of range: {type(transformer).__name__} has "
                             f"{len(layers)} attention layers (0..{len(layers) - 1})")
        processors = transformer.attn_processors
        swaps = []
        for index, key in layers:
            if index in dense:
                continue
            original = _original(processors[key])
            if not isinstance(original, family.ORIGINAL_PROCESSORS):
                raise ValueError(f"{key} is a {type(original).__name__}; zoo.diffusion can only replace "
                                 f"{', '.join(c.__name__ for c in family.ORIGINAL_PROCESSORS)}")
            swaps.append((key.removesuffix(".processor"), original))
        plans.append((transformer, family, options, swaps))

    unsparsify(pipe_or_transformer)
    state = SparseState(dense_steps)   # one step count for the pipeline's transformers
    for transformer, family, options, swaps in plans:
        for name, original in swaps:
            transformer.get_submodule(name).set_processor(family.PROCESSOR(original, name, options, state))

        def pre_hook(module, args, kwargs, family=family):
            family.record_inputs(state, module, args, kwargs)

        hook = transformer.register_forward_pre_hook(pre_hook, with_kwargs=True)
        transformer.__dict__[_ATTR] = _Record(method, options, state, hook)
    return pipe_or_transformer


def unsparsify(pipe_or_transformer):
    """Put the original processor objects back and remove the hook; returns the same object.
    A no-op on anything not sparsified."""
    for transformer in _transformers(pipe_or_transformer):
        record = transformer.__dict__.pop(_ATTR, None)
        if record is not None:
            record.hook.remove()
        for module in transformer.modules():
            processor = getattr(module, "processor", None)
            if isinstance(processor, SparseProcessorBase) and hasattr(module, "set_processor"):
                module.set_processor(processor.original)
    return pipe_or_transformer


def is_sparsified(pipe_or_transformer) -> bool:
    return any(_ATTR in t.__dict__ for t in _transformers(pipe_or_transformer))


def reset_steps(pipe_or_transformer) -> None:
    """Restart the ``dense_steps`` count: the next transformer call is step 0."""
    for transformer in _transformers(pipe_or_transformer):
        record = transformer.__dict__.get(_ATTR)
        if record is not None:
            record.state.reset()
