"""Shared kernel-test machinery: fresh random inputs, NaN-poisoned outputs, fp64 comparison.

Rule of every kernel test: draw new random inputs (never zeros), hand the kernel NaN-filled
output buffers, and compare with the fp64 reference by relative Frobenius error
``||out - ref|| / ||ref||`` under the dtype's tolerance. NaN/Inf never passes.
"""
from __future__ import annotations

import math
import os

import torch

from ops.common import interpret_mode

# Relative-error bounds per dtype: fp32 kernels use IEEE dots, fp16/bf16 round their operands.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.float16: 3e-3,
    torch.bfloat16: 2e-2,
}

KERNEL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def kernel_dtypes() -> list[torch.dtype]:
    """Dtypes to test kernels in: bf16 only on the GPU (the interpreter upcasts it, which tests
    the upcast rather than the bf16 kernel), everything on CUDA."""
    if interpret_mode() and not torch.cuda.is_available():
        return [torch.float32, torch.float16]
    return list(KERNEL_DTYPES)


def fresh_generator() -> tuple[torch.Generator, int]:
    """A generator with a new random seed per call; the seed goes into failure messages."""
    seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator().manual_seed(seed), seed


def randn(*shape: int, dtype: torch.dtype, device: str | torch.device, gen: torch.Generator,
          requires_grad: bool = False) -> torch.Tensor:
    t = torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return t.requires_grad_(requires_grad)


def poisoned(*shape: int, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """An output buffer full of NaN: any element a kernel forgets to write fails the test."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str, seed: int | None = None) -> None:
    """Assert ``out`` is finite and within ``TOLERANCE[dtype]`` of the fp64 ``ref``."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    bad = (~torch.isfinite(out)).sum().item()
    assert bad == 0, f"{what}: {bad} non-finite elements (unwritten or overflowed), seed={seed}"
    err = relative_error(out, ref)
    tol = TOLERANCE[dtype]
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} for {dtype}, seed={seed}"


# Item 2 of a batch with this stride starts past 2**31 elements while the stride itself fits in
# int32, so a kernel that multiplies the batch index and stride in 32 bits reads wrapped addresses.
FAR_BATCH_STRIDE = 2**30 + 4096


def far_batch_views(count: int, item_shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device,
                    gen: torch.Generator) -> list[torch.Tensor]:
    """``count`` random tensors [3, *item_shape] (items contiguous) in one buffer of
    ``2 * FAR_BATCH_STRIDE`` elements and more. Only the items are written: the rest of the buffer
    is address space that is never touched (a few kB of memory for 4-8 GB of addresses)."""
    item = math.prod(item_shape)
    buf = torch.empty(2 * FAR_BATCH_STRIDE + count * item, dtype=dtype, device=device)
    item_strides = torch.empty(item_shape, device="meta").stride()
    views = [buf.as_strided((3, *item_shape), (FAR_BATCH_STRIDE, *item_strides), j * item) for j in range(count)]
    for view in views:
        for b in range(3):
            view[b].copy_(randn(*item_shape, dtype=dtype, device=device, gen=gen))
    return views
