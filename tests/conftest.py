"""Test-session setup: kernels run on CUDA when present, else under Triton's CPU interpreter.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined, so it is set
here, before the test modules import ``ops``.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:  # autotune over the extreme candidates only (ops.common.tune_configs): compile time, not coverage
    os.environ.setdefault("FOVEAL_QUICK_TUNE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

from ops.common import has_triton  # noqa: E402


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="triton is not installed: kernel tests need it (CUDA or interpreter)")
    for item in items:
        if "kernel" in item.keywords and not has_triton():
            item.add_marker(skip)


@pytest.fixture
def device() -> str:
    """Where kernel tests run: the GPU when there is one, else the CPU interpreter."""
    return "cuda" if torch.cuda.is_available() else "cpu"
