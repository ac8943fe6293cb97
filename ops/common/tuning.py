"""Launch Triton kernels with as little CPU time per call as the GPU work allows.

A ``kernel[grid](*args)`` launch costs ~40 us of Python on a fast host (binder, cache key from a
stringified option dict, global-value checks), and ``triton.autotune`` adds a key rebuilt from
all arguments with list-membership tests. Our kernels take 30-70 arguments and their GPU time
is often 20-100 us, so BiFormer's routed attention, NA on small maps and VAN's training step
were CPU-bound. :class:`Launcher` resolves a problem once (autotuning it if the kernel is
autotuned), keeps the compiled kernel under a cheap key, and afterwards calls the compiled
kernel's launcher directly: 9 us instead of 54 us per launch on the H200 host
(``benchmarks/results/probe-bra-launch-cost-*``).

The key holds everything Triton specializes on: integer arguments by value (sizes, strides;
Triton specializes ``== 1`` and ``% 16``), each tensor's dtype and 16-byte alignment, the
keyword meta-parameters and the device. Floats are not specialized and pass through.
Building that key from 40-60 arguments still costs 5-10 us per launch, so call sites that know
their problem use :meth:`Launcher.launch` with a key of their own (plan sizes, strides, pointer
:func:`alignment`): BRA's eager forward+backward (five launches) went from 457 to 290 us of CPU
per call with it and a leaner autograd path (probe32, session 12).
Under ``TRITON_INTERPRET=1`` there is no compiled kernel: launches take the jit path.
"""
from __future__ import annotations

import functools
import operator
import os
import threading

import torch
import triton

from .args import element_span
from .dispatch import interpret_mode

__all__ = ["BoundLaunch", "GRID_Y_MAX", "Launcher", "alignment", "cdiv", "contiguous_strides", "heads_grid",
           "launches_direct", "next_power_of_2", "scratch_allocator", "wide_offsets"]

try:  # triton >= 3.4 keeps launch hooks (proton, custom profilers) in knobs
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover - older triton
    _knobs = None


def _torch_scratch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int8, device="cuda")


def scratch_allocator() -> None:
    """Give Triton an allocator for kernels that need global scratch memory (device-side TMA
    descriptors) if it has none: torch's caching allocator, so CUDA-graph capture works. Triton
    keeps its allocator in a context variable, which every thread starts without (the autograd
    engine's backward threads too), so launch sites call this in the thread that launches. A
    caller's own allocator is kept."""
    if getattr(_thread, "scratch", False):
        return
    try:
        from triton.runtime import _allocation
        unset = isinstance(_allocation._allocator.get(), _allocation.NullAllocator)
    except (ImportError, AttributeError):   # another triton layout: assume none is set
        unset = True
    if unset:
        triton.set_allocator(_torch_scratch)
    _thread.scratch = True


_thread = threading.local()


def cdiv(a: int, b: int) -> int:
    """Ceiling division on the host (``triton.cdiv`` is a jit function: ~10 us per host call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (n >= 1), on the host."""
    return 1 << (n - 1).bit_length()


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides ``torch.empty(shape)`` gets (row-major, size-1 dims included): what a plan
    binds for the outputs it allocates, before any of them exists."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def wide_offsets(*layouts: tuple[tuple[int, ...], tuple[int, ...]] | None) -> bool:
    """True when some (shape, strides) layout has elements 2**31 or more apart: its kernels then
    need 64-bit batch offsets (a ``WIDE`` meta-parameter), which cost the common case instructions."""
    return any(lay is not None and element_span(*lay) >= 2**31 for lay in layouts)


GRID_Y_MAX = 65535   # CUDA's limit on a grid's second axis


def heads_grid(per_head: int, heads: int) -> tuple[int, ...]:
    """The grid of kernels that run ``per_head`` programs for each of ``heads`` (batch, head)
    pairs: 2-D, or flat past the second axis' limit (their ``FLAT`` meta-parameter is then
    ``len(grid) == 1``)."""
    return (per_head, heads) if heads <= GRID_Y_MAX else (per_head * heads,)


def alignment(*tensors: torch.Tensor) -> tuple[int, ...]:
    """Each tensor's address mod 16 (Triton specializes pointers on 16-byte alignment): the
    tensor part of a :meth:`Launcher.launch` site key."""
    bits = 0
    for t in tensors:
        bits |= t.data_ptr()
    # the common case, all aligned, is one small int
    return (0,) if not bits & 15 else tuple([t.data_ptr() & 15 for t in tensors])


def _arg_key(a):
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    return None if isinstance(a, float) else a


def _problem_key(args: tuple, kwargs: dict) -> tuple:
    """What Triton's specialization and the autotuner's choice depend on (see module docstring)."""
    return (*map(_arg_key, args), *kwargs.items())


def _picker(positions: list[int]):
    """``args -> tuple of args[i] for i in positions`` at C speed."""
    if not positions:
        return lambda args: ()
    if len(positions) == 1:
        i = positions[0]
        return lambda args: (args[i],)
    return operator.itemgetter(*positions)


class _ArgLayout:
    """Which positions of a launch site hold tensors (or None) and which hold specialized scalars,
    learned from its first call, so later keys are built without testing every argument's type.
    ``key`` returns None when a call does not fit the layout (the caller then uses
    :func:`_problem_key`)."""

    __slots__ = ("n", "tensors", "scalars")

    def __init__(self, args: tuple) -> None:
        self.n = len(args)
        self.tensors = _picker([i for i, a in enumerate(args) if a is None or isinstance(a, torch.Tensor)])
        self.scalars = _picker([i for i, a in enumerate(args)
                                if not (a is None or isinstance(a, (torch.Tensor, float)))])

    def key(self, args: tuple, kwargs: dict):
        if len(args) != self.n:
            return None
        try:
            tensors = [None if t is None else (t.dtype, t.data_ptr() % 16 == 0) for t in self.tensors(args)]
        except AttributeError:   # a non-tensor where the first call had a tensor
            return None
        return (*self.scalars(args), *tensors, *kwargs.items())


def _hooks():
    """(enter, exit) launch hooks when any are installed, else None."""
    if _knobs is None:
        return None
    enter, exit_ = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
    if getattr(enter, "calls", enter) or getattr(exit_, "calls", exit_):
        return enter, exit_
    return None


def launches_direct(*launches: "BoundLaunch") -> bool:
    """Whether every launch has its compiled kernel and no launch hooks are installed: their
    pointer arguments may then be raw addresses (ints), which Triton's launcher passes on without
    calling ``data_ptr`` or querying the driver; otherwise (not compiled yet, the interpreter,
    hooks) they go through :meth:`Launcher.launch`, which needs tensors."""
    return _hooks() is None and all(b.direct is not None for b in launches)


class _Compiled:
    """One resolved problem: the compiled kernel and the trailing (keyword and tuned) arguments in
    signature order, so a launch is ``run(grid, stream, ..., *args, *tail)``."""

    __slots__ = ("kernel", "run", "function", "packed", "tail", "device")

    def __init__(self, kernel, tail: tuple, device: int) -> None:
        self.kernel, self.tail, self.device = kernel, tail, device
        self.run = kernel.run          # initializes the module handles on first access
        self.function, self.packed = kernel.function, kernel.packed_metadata

    def __call__(self, grid, args: tuple) -> None:
        full = (*args, *self.tail)
        if callable(grid):
            grid = grid(dict(zip(self.kernel.src.fn.arg_names, full)))
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        stream = _raw_stream(self.device)
        hooks = _hooks()
        if hooks is None:
            self.run(grid[0], g1, g2, stream, self.function, self.packed, None, None, None, *full)
        else:
            meta = self.kernel.launch_metadata(grid, stream, *full)
            self.run(grid[0], g1, g2, stream, self.function, self.packed, meta, *hooks, *full)


_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
_current_device = getattr(torch._C, "_cuda_getDevice", None)


class Launcher:
    """``launcher[grid](*args, **meta)`` for a ``@triton.jit`` or ``@triton.autotune`` kernel.

    The first call of a problem goes through Triton (the autotuner picks a config, the jit
    compiles); later calls launch the compiled kernel directly. ``launcher.configs`` maps problem
    keys to the chosen ``triton.Config`` (autotuned kernels), ``launcher.compiled`` to the
    compiled kernels used for direct launches.
    """

    def __init__(self, kernel) -> None:
        self.autotuner = kernel if isinstance(kernel, triton.runtime.Autotuner) else None
        self.fn = kernel.fn if self.autotuner is not None else kernel
        self.configs: dict[tuple, object] = {}
        self.compiled: dict[tuple, _Compiled] = {}
        self.layout: _ArgLayout | None = None
        self.sites: dict[tuple, _Compiled] = {}
        # compiled kernels exist only off the interpreter; FOVEAL_DIRECT_LAUNCH=0 keeps the jit path
        self.direct = (not interpret_mode() and _raw_stream is not None and _current_device is not None
                       and os.environ.get("FOVEAL_DIRECT_LAUNCH", "1") != "0")

    def __getitem__(self, grid):
        return functools.partial(self._launch, grid)

    def bind(self, site: tuple, grid: tuple, scalars: tuple, meta: dict) -> "BoundLaunch":
        """A launch of this kernel with everything but its leading tensor arguments fixed (see
        :class:`BoundLaunch`); ``site`` as in :meth:`launch`, for the tensors the bound launch
        will be called with."""
        return BoundLaunch(self, site, grid, scalars, meta)

    def launch(self, site: tuple, grid, args: tuple, meta: dict) -> _Compiled | None:
        """``self[grid](*args, **meta)`` for a caller that keys its own problems: ``site`` must
        determine every value Triton specializes on (integer arguments, tensor dtypes and 16-byte
        alignment, ``meta``) and the device. A known site launches its compiled kernel without
        building the generic key (~5-10 us of CPU per launch on the H200 host, which eager BRA
        is bound by); a new one takes the generic path and is remembered once compiled. Returns
        the site's compiled kernel (None until there is one, and always under the interpreter)."""
        entry = self.sites.get(site)
        if entry is not None:
            entry(grid, args)
            return entry
        entry = self._launch(grid, *args, **meta)
        if entry is not None:
            self.sites[site] = entry
        return entry

    def _launch(self, grid, *args, **kwargs) -> _Compiled | None:
        """Launch through the generic key; returns the problem's compiled kernel once there is one
        (returned, not kept on the launcher: threads, e.g. ``nn.DataParallel``'s, share it)."""
        layout = self.layout
        if layout is None:
            layout = self.layout = _ArgLayout(args)
        key = layout.key(args, kwargs)
        if key is None:
            key = ("generic", *_problem_key(args, kwargs))
        if self.direct:
            key = (_current_device(), *key)
            entry = self.compiled.get(key)
            if entry is not None:
                entry(grid, args)
                return entry
        tuned = {}
        if self.autotuner is not None:
            config = self.configs.get(key)
            if config is None:   # first time: let the autotuner choose (it launches the kernel)
                self.autotuner[grid](*args, **kwargs)
                self.configs[key] = self.autotuner.best_config
                if self.direct:
                    return self._resolve(key, grid, args, kwargs, self.autotuner.best_config, launch=False)
                return None
            tuned = config.all_kwargs()
        if self.direct:
            return self._resolve(key, grid, args, kwargs, self.configs.get(key), launch=True)
        self.fn[grid](*args, **kwargs, **tuned)
        return None

    def _resolve(self, key, grid, args, kwargs, config, launch: bool) -> _Compiled | None:
        """Compile (or find) the kernel of this problem and remember it for direct launches;
        launch it through the jit when ``launch``."""
        options = config.all_kwargs() if config is not None else {}
        if launch:
            kernel = self.fn[grid](*args, **kwargs, **options)
        else:
            kernel = self.fn.warmup(*args, grid=grid, **kwargs, **options)
        if hasattr(kernel, "result"):   # triton's async compile mode returns a future
            kernel = kernel.result()
        named = {**kwargs, **(config.kwargs if config is not None else {})}
        names = self.fn.arg_names[len(args):]
        if kernel is None or any(n not in named for n in names):
            return None   # a defaulted parameter was left out: keep the jit path for this problem
        entry = self.compiled[key] = _Compiled(kernel, tuple(named[n] for n in names), key[0])
        return entry


class BoundLaunch:
    """``bound(*tensors)``: one launch site of a :class:`Launcher` with its grid, trailing scalar
    arguments (strides, sizes) and meta-parameters fixed, called with the leading tensors only.

    Ops keep one per problem (in their plan caches) so a repeated eager call neither rebuilds nor
    hashes a key per launch: once the site has a compiled kernel the call goes straight to its C
    launcher. The caller guarantees what the site stands for: tensors with the dtypes and the
    16-byte alignment the site was built for, on its device. Under the interpreter (or with
    launch hooks installed) every call goes through :meth:`Launcher.launch`.
    """

    __slots__ = ("launcher", "site", "grid", "scalars", "meta", "direct")

    def __init__(self, launcher: Launcher, site: tuple, grid: tuple, scalars: tuple, meta: dict) -> None:
        self.launcher, self.site, self.grid, self.scalars, self.meta = launcher, site, tuple(grid), scalars, meta
        self.direct = None   # (run, g0, g1, g2, function, packed, device, trailing args) once compiled

    def __call__(self, *tensors) -> None:
        direct = self.direct
        if direct is not None and _hooks() is None:
            run, g0, g1, g2, function, packed, device, tail = direct
            run(g0, g1, g2, _raw_stream(device), function, packed, None, None, None, *tensors, *tail)
            return
        entry = self.launcher.launch(self.site, self.grid, tensors + self.scalars, self.meta)
        if entry is not None and direct is None:
            g = self.grid
            self.direct = (entry.run, g[0], g[1] if len(g) > 1 else 1, g[2] if len(g) > 2 else 1, entry.function,
                           entry.packed, entry.device, self.scalars + entry.tail)
