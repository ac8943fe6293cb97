"""The ``torch.library`` namespace every op registers into.

Pattern (see ``ops/neighborhood/__init__.py``): each op defines ``foveal::<op>_forward`` and
``foveal::<op>_backward`` with ``torch.library.custom_op`` (schema inferred from type hints),
gives both a fake (meta) implementation so ``torch.compile`` can trace shapes, and connects
them with ``register_autograd``. The op body picks the Triton kernel or the reference through
``ops.common.use_triton``, so one registered op serves every device and compiles with
``fullgraph=True`` without graph breaks.
"""
from __future__ import annotations

LIBRARY = "foveal"


def op_name(name: str) -> str:
    """Qualified ``torch.library`` name of a foveal op, e.g. ``foveal::na_forward``."""
    return f"{LIBRARY}::{name}"
