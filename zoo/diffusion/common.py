"""Shared machinery of the sparse attention processors: options, the per-forward state a
transformer pre-hook fills in (token grid, text length, denoising step), and the base class
that delegates to the original diffusers processor whenever a call runs dense."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ops import neighborhood_attention, radial_attention


@dataclass(frozen=True)
class NAOptions:
    """Per-axis neighborhood options, already normalised to one value per grid axis."""
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]


@dataclass(frozen=True)
class RadialOptions:
    """Radial attention's options (``ops.radial_attention``): the window decay, the rule for
    adjacent frames ("wan": half a frame, "hunyuan": the whole frame) and the mask's block."""
    decay_factor: float
    model: str
    block_size: int = 128


def per_axis(value, rank: int, name: str) -> tuple[int, ...]:
    """An int or a sequence of ``rank`` positive ints -> a tuple of ``rank`` ints."""
    values = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be an int or a tuple of {rank} ints, got {value!r}") from None
    if len(values) != rank or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be a positive int or a tuple of {rank} positive ints "
                         f"(one per grid axis), got {value!r}")
    return values


class SparseState:
    """What the processors of one sparsified transformer (or of a pipeline's transformers) read.

    ``grid`` / ``text_len`` are set by the transformer's forward pre-hook from the call's inputs.
    ``step`` is the denoising step index of the current pipeline call, counted from the distinct
    timesteps the transformers see: a timestep lower than the last one is the next step, an equal
    one is the same step (classifier-free guidance runs the transformer twice per step), and a
    higher one starts a new pipeline call (step 0): diffusion schedules run from noisy (high t)
    to clean (low t). ``reset()`` restarts the count by hand.
    """

    def __init__(self, dense_steps: int):
        self.dense_steps = dense_steps
        self.grid: tuple[int, ...] | None = None
        self.text_len = 0
        self.step = 0
        self.last_t: float | None = None
        self.cache: dict = {}

    def reset(self) -> None:
        self.step, self.last_t = 0, None

    def observe_timestep(self, timestep) -> None:
        if self.dense_steps <= 0 or timestep is None:
            return   # no warm-up: never read the timestep (no host sync)
        t = float(timestep.max()) if isinstance(timestep, torch.Tensor) else float(timestep)
        if self.last_t is None or t > self.last_t:
            self.step = 0
        elif t < self.last_t:
            self.step += 1
        self.last_t = t

    @property
    def dense_now(self) -> bool:
        return self.step < self.dense_steps


def bind_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict:
    """The transformer's forward arguments by name (positional ones included), read from the
    class's ``forward`` (hooks may have wrapped the instance's)."""
    sig = inspect.signature(type(module).forward)
    return sig.bind_partial(module, *args, **kwargs).arguments


class SparseProcessorBase:
    """A processor that replaces the attention call of ``original`` (a diffusers processor) and
    hands every dense call back to it unchanged.

    ``_attention_backend`` / ``_parallel_config`` forward to the original, so
    ``transformer.set_attention_backend(...)`` after ``sparsify`` reaches the dense parts and
    survives ``unsparsify``.
    """

    def __init__(self, original, name: str, options: NAOptions | RadialOptions, state: SparseState):
        self.original = original
        self.name = name
        self.options = options
        self.state = state

    @property
    def _attention_backend(self):
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value):
        self.original._attention_backend = value

    @property
    def _parallel_config(self):
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value):
        self.original._parallel_config = value

    def __repr__(self) -> str:
        o = self.options
        if isinstance(o, RadialOptions):
            return (f"{type(self).__name__}(layer={self.name!r}, method='radial', decay_factor={o.decay_factor}, "
                    f"model={o.model!r}, block_size={o.block_size})")
        return (f"{type(self).__name__}(layer={self.name!r}, kernel_size={o.kernel_size}, stride={o.stride}, "
                f"dilation={o.dilation})")

    def grid_attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, grid: tuple[int, ...],
                       extra_keys: torch.Tensor | None = None,
                       extra_values: torch.Tensor | None = None) -> torch.Tensor:
        """Sparse attention of grid tokens [B, N, heads, D] (row-major over ``grid``), with
        optional tokens every query also attends [B, M, heads, D]; returns [B, N, heads, D].
        Neighborhood attention, or radial attention over the grid's frames (its first axis)."""
        b, h, o = query.shape[0], query.shape[2], self.options
        if isinstance(o, RadialOptions):
            n, m = query.shape[1], 0 if extra_keys is None else extra_keys.shape[1]
            if m:   # the extra tokens join the sequence as radial attention's dense text tokens
                query, key, value = (torch.cat(pair, 1) for pair in ((query, extra_keys), (key, extra_keys),
                                                                     (value, extra_values)))
            out = radial_attention(query, key, value, grid[0], o.decay_factor, o.model, text_tokens=m,
                                   block_size=o.block_size)
            return out[:, :n] if m else out
        out = neighborhood_attention(
            query.reshape(b, *grid, h, -1), key.reshape(b, *grid, h, -1), value.reshape(b, *grid, h, -1),
            o.kernel_size, dilation=o.dilation, stride=o.stride,
            additional_keys=extra_keys, additional_values=extra_values)
        return out.flatten(1, len(grid))

    def sparse_grid(self, n_tokens: int, attention_mask) -> tuple[int, ...]:
        """The grid of the current call, checked against the tokens and the window."""
        grid = self.state.grid
        if grid is None:
            raise RuntimeError(f"{self.name}: no token grid recorded; call the transformer itself "
                               "(its forward pre-hook records the grid) rather than the attention module")
        if self._parallel_config is not None:
            raise NotImplementedError(f"{self.name}: sparse attention does not support context parallelism")
        if attention_mask is not None:
            raise NotImplementedError(f"{self.name}: sparse attention does not take an attention_mask")
        count = 1
        for g in grid:
            count *= g
        if count != n_tokens:
            raise ValueError(f"{self.name}: {n_tokens} tokens do not form the grid {grid}")
        o = self.options
        if isinstance(o, NAOptions) and any(k * d > g for k, d, g in zip(o.kernel_size, o.dilation, grid)):
            raise ValueError(f"{self.name}: kernel_size {o.kernel_size} (dilation {o.dilation}) exceeds the token "
                             f"grid {grid}; use a window of at most the grid on every axis")
        return grid
