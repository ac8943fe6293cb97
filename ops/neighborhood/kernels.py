"""Triton kernels for neighborhood attention.

Forward, 1-D, stride 1, dilation 1, non-causal: each program owns ``BLOCK_M`` consecutive
queries of one (batch, head) and streams only the key blocks that their clamped windows
cover, with an online softmax; the attention matrix never exists in memory. Masks are
computed in-kernel from indices. Outputs: O [B, L, H, Dv] and the natural-log LSE [B, L, H].
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common import interpret_mode

LOG2E = 1.4426950408889634


def _configs():
    if interpret_mode():  # one small config: autotuning under the interpreter only costs time
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 4, 3),
                             (64, 32, 4, 3), (128, 128, 8, 2)]
    ]


@triton.autotune(configs=_configs(), key=["L", "KERNEL", "HEAD_DIM", "HEAD_DIM_V", "DTYPE_KEY"])
@triton.jit
def _na1d_fwd_kernel(
    Q, K, V, O, LSE,
    sq_b, sq_l, sq_h,
    sk_b, sk_l, sk_h,
    sv_b, sv_l, sv_h,
    so_b, so_l, so_h,
    sl_b, sl_l, sl_h,
    H, KV_GROUP, L, qk_scale,
    KERNEL: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DTYPE_KEY: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // KV_GROUP

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_valid = offs_m < L

    q_ptrs = Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_l + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_valid[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if UPCAST:  # the interpreter's tl.dot is wrong on bf16 operands
        q = q.to(tl.float32)

    # Window of query i: [start_i, start_i + KERNEL), start_i = clamp(i - KERNEL // 2, 0, L - KERNEL).
    win_start = tl.minimum(tl.maximum(offs_m - KERNEL // 2, 0), L - KERNEL)
    first_q = pid_m * BLOCK_M
    last_q = tl.minimum(first_q + BLOCK_M, L) - 1
    kv_lo = tl.minimum(tl.maximum(first_q - KERNEL // 2, 0), L - KERNEL)
    kv_hi = tl.minimum(tl.maximum(last_q - KERNEL // 2, 0), L - KERNEL) + KERNEL

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)

    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    for start_n in range(kv_lo, kv_hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < kv_hi
        k = tl.load(k_base + offs_n[None, :] * sk_l + offs_d[:, None],
                    mask=n_valid[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)
        v = tl.load(v_base + offs_n[:, None] * sv_l + offs_dv[None, :],
                    mask=n_valid[:, None] & (offs_dv[None, :] < HEAD_DIM_V), other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale          # log2 domain
        inside = (offs_n[None, :] >= win_start[:, None]) & (offs_n[None, :] < win_start[:, None] + KERNEL)
        s = tl.where(inside & n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    o_ptrs = O + b * so_b + h * so_h + offs_m[:, None] * so_l + offs_dv[None, :]
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=m_valid[:, None] & (offs_dv[None, :] < HEAD_DIM_V))
    lse = (m_i + tl.log2(l_i)) / 1.4426950408889634                     # back to natural log
    tl.store(LSE + b * sl_b + h * sl_h + offs_m * sl_l, lse, mask=m_valid)


def _block(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def na1d_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int,
                 scale: float, out: torch.Tensor | None = None,
                 lse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the 1-D forward kernel. q: [B, L, H, D]; k: [B, L, Hkv, D]; v: [B, L, Hkv, Dv].

    Inputs may be strided (only the head dim must be contiguous). ``out`` [B, L, H, Dv] and
    ``lse`` [B, L, H] (float32) may be given preallocated (tests pass NaN-filled buffers to
    prove every element is written). Returns (O, LSE).
    """
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    batch, length, heads, head_dim = q.shape
    head_dim_v = v.shape[-1]
    if out is None:
        out = torch.empty(batch, length, heads, head_dim_v, device=q.device, dtype=q.dtype)
    if lse is None:
        lse = torch.empty(batch, length, heads, device=q.device, dtype=torch.float32)
    upcast = interpret_mode() and q.dtype == torch.bfloat16
    precision = "ieee" if q.dtype in (torch.float32, torch.float64) or upcast else "tf32"

    def grid(meta):
        return (triton.cdiv(length, meta["BLOCK_M"]), batch * heads)

    _na1d_fwd_kernel[grid](
        q, k, v, out, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        lse.stride(0), lse.stride(1), lse.stride(2),
        heads, heads // k.shape[2], length, scale * LOG2E,
        KERNEL=kernel_size, HEAD_DIM=head_dim, HEAD_DIM_V=head_dim_v,
        BLOCK_D=_block(head_dim), BLOCK_DV=_block(head_dim_v), DTYPE_KEY=str(q.dtype),
        UPCAST=upcast, PRECISION=precision,
    )
    return out, lse
