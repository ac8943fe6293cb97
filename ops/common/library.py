"""The ``torch.library`` namespace every op registers into.

Pattern (see ``ops/neighborhood/__init__.py``): each op defines ``foveal::<op>_forward`` and
``foveal::<op>_backward`` with ``torch.library.custom_op`` (schema inferred from type hints),
gives both a fake (meta) implementation so ``torch.compile`` can trace shapes, and connects
them with ``register_autograd``. The op body picks the Triton kernel or the reference through
``ops.common.use_kernels``, so one registered op serves every device and compiles with
``fullgraph=True`` without graph breaks. Public functions call the op through
:func:`eager_autograd`, which skips the dispatcher in eager mode.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

LIBRARY = "foveal"


def op_name(name: str) -> str:
    """Qualified ``torch.library`` name of a foveal op, e.g. ``foveal::na_forward``."""
    return f"{LIBRARY}::{name}"


_EAGER_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def op_or_impl(op, impl: Callable) -> Callable:
    """Call ``op`` while ``torch.compile`` traces (the graph must hold the registered op) and
    ``impl`` directly otherwise (no dispatcher cost): for the backward and helper ops that
    :func:`eager_autograd`'s forward calls. The first argument must be a tensor: AOTAutograd
    traces a compiled graph's backward with fake/functional tensor subclasses while
    ``is_compiling()`` may already be False (torch 2.11), so any tensor subclass also takes
    the op (its fake implementation never touches data)."""
    def call(*args):
        if torch.compiler.is_compiling() or type(args[0]) not in _EAGER_TENSOR_TYPES:
            return op(*args)
        return impl(*args)
    return call


def _is_tensor_list(a) -> bool:
    return isinstance(a, (list, tuple)) and len(a) > 0 and all(isinstance(t, torch.Tensor) for t in a)


def _needs_grad(a) -> bool:
    if isinstance(a, torch.Tensor):
        return a.requires_grad
    # a list argument holds tensors only or none (see _is_tensor_list): its first entry tells
    return (isinstance(a, (list, tuple)) and len(a) > 0 and isinstance(a[0], torch.Tensor)
            and any(t.requires_grad for t in a))


def eager_autograd(op, impl: Callable, setup_context: Callable, backward: Callable) -> Callable:
    """Call ``op`` when ``torch.compile`` traces, and ``impl`` through a plain
    ``torch.autograd.Function`` in eager mode, with the op's own ``setup_context`` and
    ``backward``.

    The custom-op dispatcher costs tens of microseconds of CPU per call (autograd wrapper,
    redispatch, dynamo-disable guard), which is more than a small fused kernel's GPU time:
    BiFormer's routed attention was CPU-bound because of it. Autograd only tracks top-level
    tensors, so tensor-list arguments travel flattened and are rebuilt for ``impl``; their
    gradients (lists from ``backward``) are flattened back. Unused outputs get ``None``
    gradients (``set_materialize_grads(False)``), so backward formulas must accept ``None``.
    When nothing needs a gradient (grad mode off, or no input requires one) ``impl`` runs
    without the Function: inference pays no autograd node or saved tensors.
    """
    def unflatten(lengths, flat):
        args, i = [], 0
        for n in lengths:
            args.append(list(flat[i:i + n]) if n is not None else flat[i])
            i += 1 if n is None else n
        return args

    class EagerFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, lengths, *flat):
            # lengths: None when no argument is a tensor list (the common case: nothing to rebuild)
            ctx.set_materialize_grads(False)
            ctx.lengths = lengths
            args = flat if lengths is None else unflatten(lengths, flat)
            output = impl(*args)
            setup_context(ctx, args, output)
            # a list output (an op returning ``list[Tensor]``) travels as a tuple; its backward gets
            # the list of gradients as one argument, as the registered op's does
            ctx.list_output = isinstance(output, list)
            return tuple(output) if ctx.list_output else output

        @staticmethod
        def backward(ctx, *grads):
            if ctx.list_output:
                grads = (list(grads),)
            if ctx.lengths is None:
                return (None, *backward(ctx, *grads))
            flat = [None]   # the lengths argument
            for n, g in zip(ctx.lengths, backward(ctx, *grads)):
                flat.extend([g] if n is None else (g if g is not None else [None] * n))
            return tuple(flat)

    EagerFunction.__name__ = EagerFunction.__qualname__ = f"{impl.__name__}_eager"

    def call(*args):
        if torch.compiler.is_compiling():
            return op(*args)
        if not (torch.is_grad_enabled() and any(map(_needs_grad, args))):
            return impl(*args)   # nothing to differentiate (inference): no autograd node, no saved tensors
        if not any(map(_is_tensor_list, args)):
            return EagerFunction.apply(None, *args)
        lengths = tuple(len(a) if _is_tensor_list(a) else None for a in args)
        flat = [t for a, n in zip(args, lengths) for t in (a if n is not None else (a,))]
        return EagerFunction.apply(lengths, *flat)
    return call
