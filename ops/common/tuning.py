"""Launch ``triton.autotune``d kernels without paying the autotuner on every call.

Triton's ``Autotuner.run`` rebuilds its key on each launch from a dict of all arguments,
filtered with list-membership tests (quadratic in the argument count), before calling the
kernel. Our kernels take 40-70 arguments (strides of several tensors), and that bookkeeping
cost more CPU time than the GPU time of a small call: neighborhood attention on a 96x96 map
and BiFormer's routed attention were CPU-bound because of it. :class:`TunedLauncher` lets the
autotuner pick the config the first time it sees a problem, remembers that config under a
cheap key (integer arguments, tensor dtypes, keyword meta-parameters) and afterwards launches
the underlying ``@triton.jit`` function directly with it.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["TunedLauncher"]


def _problem_key(args: tuple, kwargs: dict) -> tuple:
    """Everything that can change the autotuner's choice: integers (sizes, strides), tensor
    dtypes and the keyword meta-parameters. Data pointers and float scalars do not."""
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append(a.dtype)
        elif isinstance(a, (int, bool, str)) or a is None:
            key.append(a)
    return (*key, *kwargs.items())


class TunedLauncher:
    """``launcher[grid](*args, **meta)`` for an autotuned kernel; see the module docstring.

    ``launcher.autotuner`` is the ``triton.autotune`` object (configs, cache, ``.fn``).
    """

    def __init__(self, autotuner) -> None:
        self.autotuner = autotuner
        self.configs: dict[tuple, object] = {}

    def __getitem__(self, grid):
        return functools.partial(self._launch, grid)

    def _launch(self, grid, *args, **kwargs):
        key = _problem_key(args, kwargs)
        config = self.configs.get(key)
        if config is None:   # first time: let the autotuner choose (or find its cached choice)
            self.autotuner[grid](*args, **kwargs)
            self.configs[key] = self.autotuner.best_config
            return
        self.autotuner.fn[grid](*args, **kwargs, **config.all_kwargs())
