"""Peer implementations that several suites time against (dense SDPA backends and FlexAttention),
the forward+backward wrapper the attention suites time them with, and CUDA-graph replays."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: SDPBackend) -> Callable[[], torch.Tensor]:
    """Dense attention over all tokens with one SDPA backend. Inputs are [B, N, H, D] (heads last)."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qt, kt, vt)
    return run


def dense_peers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, device: str) -> dict[str, Callable | str]:
    """cuDNN and flash SDPA on CUDA; the math backend on CPU."""
    flat = [t.flatten(1, -3) for t in (q, k, v)]
    if device != "cuda":
        return {"sdpa-math (dense)": sdpa(*flat, SDPBackend.MATH)}
    return {"sdpa-cudnn (dense)": sdpa(*flat, SDPBackend.CUDNN_ATTENTION),
            "sdpa-flash (dense)": sdpa(*flat, SDPBackend.FLASH_ATTENTION)}


def flex_peer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_mod, device: str,
              block_size: int = 128) -> Callable | str:
    """Compiled FlexAttention with a block mask built once (cached), as users run it.

    ``q/k/v`` are [B, N, H, D] in the token order the mask_mod expects.
    """
    if device != "cuda":
        return "FlexAttention is compiled for CUDA only here"
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # Every case compiles its own specialisation; past dynamo's default limit of 8 it would fall
    # back to the unfused eager path and time that instead.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
    n = q.shape[1]
    block_mask = create_block_mask(mask_mod, None, None, n, n, device=device, BLOCK_SIZE=block_size)
    flex = torch.compile(flex_attention, dynamic=False)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    return lambda: flex(qt, kt, vt, block_mask=block_mask)


class CUDAGraphed:
    """``fn`` replayed from a CUDA graph: the GPU work of a call without its CPU launch cost.

    Small ops (BRA on BiFormer's shapes) are CPU-bound in eager mode, so eager timings measure
    Python and launch overhead; timing both an op and its peer as graphs compares what the GPU
    does. Captured on first call, after warm-up on a side stream (autotuning, allocations and
    compilation happen outside the capture). Extra memory of these rows sits in the graph's pool,
    so only their peak memory is meaningful.
    """

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.graph = None

    def __call__(self):
        if self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.fn()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = self.fn()
        self.graph.replay()
        return self.output


def with_graphs(impls: dict, device: str) -> dict:
    """``impls`` plus, on CUDA, each replayed from a CUDA graph ("<name> (CUDA graph)" rows)."""
    if device != "cuda":
        return impls
    return {**impls, **{f"{name} (CUDA graph)": CUDAGraphed(fn) for name, fn in impls.items()}}


def with_backward(fn: Callable[[], torch.Tensor], inputs, grad: torch.Tensor) -> Callable[[], None]:
    """A call of ``fn`` and its backward with ``grad``, the inputs' gradients cleared first. An
    output in [B, H, N, D] (dense SDPA, FlexAttention) against a heads-last ``grad`` [B, N, H, D]
    gets the transposed gradient; a tuple output (fla) its first entry."""
    def run():
        for t in inputs:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad if out.shape == grad.shape else grad.transpose(1, 2))
    return run
