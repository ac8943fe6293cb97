"""Where an op runs: Triton kernels on CUDA (or on CPU under ``TRITON_INTERPRET=1``), else the reference."""
from __future__ import annotations

import importlib.util
import os

import torch

__all__ = ["dot_precision", "has_triton", "interpret_mode", "tune_configs", "use_kernels", "use_triton"]


# Both are read once, at import: torch.compile traces the ops' dispatch (``use_kernels``) and
# cannot trace ``importlib.util.find_spec`` on a first, uncached call.
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
_QUICK_TUNE = os.environ.get("FOVEAL_QUICK_TUNE", "0") == "1"


def has_triton() -> bool:
    """True when the ``triton`` package can be imported (CPU-only torch builds lack it)."""
    return _HAS_TRITON


def interpret_mode() -> bool:
    """True when Triton runs kernels with its CPU interpreter (``TRITON_INTERPRET=1``).

    Triton reads the variable when a ``@triton.jit`` function is defined, so set it before
    importing any kernel module (the test suite's conftest does); foveal reads it once, when
    ``ops`` is imported.
    """
    return _INTERPRET


def tune_configs(configs: list) -> list:
    """The autotuning candidates of a kernel: all of them, or with ``FOVEAL_QUICK_TUNE=1`` (read at
    import) only the first and the last, the extremes of each list's block sizes and warps. GPU
    test runs set it (``tests/conftest.py``): every new shape compiles each candidate, and seven
    candidates per test shape made the CUDA test files outlast a 10-minute device call."""
    return [configs[0], configs[-1]] if _QUICK_TUNE and len(configs) > 2 else configs


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Decide the path for a call: the Triton kernels or the plain-PyTorch reference.

    CUDA tensors take the kernels; CPU tensors take them only in interpreter mode; any other
    device (MPS, XPU, meta) runs the reference. ``FOVEAL_FORCE_REFERENCE=1`` forces the
    reference everywhere (for A/B checks).
    """
    if not _HAS_TRITON or os.environ.get("FOVEAL_FORCE_REFERENCE") == "1":
        return False
    # one pass over the tensors: this runs on every call of every op, and eager calls of small
    # problems are bound by their CPU time
    present = cuda = 0
    for t in tensors:
        if t is not None:
            present += 1
            cuda += t.is_cuda
    if cuda == present:
        return present > 0
    return interpret_mode() and all(t.device.type == "cpu" for t in tensors if t is not None)


def use_kernels(*tensors: torch.Tensor | None) -> bool:
    """``use_triton`` and a dtype the kernels run (fp16/bf16/fp32): float64 (gradcheck, the fp64
    oracles) takes the reference. The first tensor decides the dtype (the ops check they agree)."""
    return tensors[0].dtype != torch.float64 and use_triton(*tensors)


def dot_precision(dtype: torch.dtype) -> tuple[bool, str]:
    """(UPCAST, PRECISION) of the attention kernels' ``tl.dot`` for inputs of ``dtype``: fp32 gets
    IEEE dots, not TF32; under the interpreter bf16 is upcast to fp32 first (its bf16 ``tl.dot``
    returns garbage) and takes IEEE dots too."""
    upcast = interpret_mode() and dtype == torch.bfloat16
    return upcast, ("ieee" if dtype in (torch.float32, torch.float64) or upcast else "tf32")
