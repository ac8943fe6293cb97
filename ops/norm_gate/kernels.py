"""Triton kernels of the norm-gate mix: one pass forward, one pass backward (the norms are
recomputed from x and y, so nothing but the inputs is saved). Rows are the leading dims
flattened, each of D channels with unit stride; a program walks row blocks with a stride of the
grid, so the backward's weight gradients come out as one fp32 partial sum per program."""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..common import interpret_mode


@triton.jit
def _mask(rows, cols, R, D):
    return (rows < R)[:, None] & (cols < D)[None, :]


@triton.jit
def _load(P, rows, cols, stride, mask):
    return tl.load(P + rows.to(tl.int64)[:, None] * stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _norm_gate_fwd(X, Y, G, WX, WY, OUT, R, D, sx, sy, sg, so, eps,
                   BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    wx = tl.load(WX + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
    wy = tl.load(WY + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
    for start in range(tl.program_id(0) * BLOCK_R, R, tl.num_programs(0) * BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        m = _mask(rows, cols, R, D)
        x = _load(X, rows, cols, sx, m)
        y = _load(Y, rows, cols, sy, m)
        s = tl.sigmoid(_load(G, rows, cols, sg, m))
        rx = 1.0 / tl.sqrt(tl.sum(x * x, 1) / D + eps)
        ry = 1.0 / tl.sqrt(tl.sum(y * y, 1) / D + eps)
        out = x * rx[:, None] * wx * s + y * ry[:, None] * wy * (1.0 - s)
        tl.store(OUT + rows.to(tl.int64)[:, None] * so + cols[None, :], out.to(OUT.dtype.element_ty), mask=m)


@triton.jit
def _norm_gate_bwd(DOUT, X, Y, G, WX, WY, DX, DY, DG, DWX, DWY, R, D, sd, sx, sy, sg, eps,
                   BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """dG = dO (a - b) s (1 - s) with a, b the weighted norms; dX = rx (dnx - nx mean(dnx nx)),
    dnx = dO s wx (dY alike, with 1 - s and wy); dWX = sum over rows of dO s nx (partial per
    program). The three input gradients share one row stride (fresh contiguous buffers)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    wx = tl.load(WX + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    wy = tl.load(WY + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    dwx = tl.zeros([BLOCK_D], dtype=tl.float32)
    dwy = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(pid * BLOCK_R, R, tl.num_programs(0) * BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        m = _mask(rows, cols, R, D)
        do = _load(DOUT, rows, cols, sd, m)
        x = _load(X, rows, cols, sx, m)
        y = _load(Y, rows, cols, sy, m)
        s = tl.sigmoid(_load(G, rows, cols, sg, m))
        rx = 1.0 / tl.sqrt(tl.sum(x * x, 1) / D + eps)
        ry = 1.0 / tl.sqrt(tl.sum(y * y, 1) / D + eps)
        nx = x * rx[:, None]
        ny = y * ry[:, None]
        dg = do * (nx * wx - ny * wy) * s * (1.0 - s)
        dnx = do * s
        dny = do - dnx
        dwx += tl.sum(dnx * nx, 0)
        dwy += tl.sum(dny * ny, 0)
        dnx = dnx * wx
        dny = dny * wy
        dx = rx[:, None] * (dnx - nx * (tl.sum(dnx * nx, 1) / D)[:, None])
        dy = ry[:, None] * (dny - ny * (tl.sum(dny * ny, 1) / D)[:, None])
        offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=m)
        tl.store(DY + offs, dy.to(DY.dtype.element_ty), mask=m)
        tl.store(DG + offs, dg.to(DG.dtype.element_ty), mask=m)
    tl.store(DWX + pid * D + cols, dwx, mask=cmask)
    tl.store(DWY + pid * D + cols, dwy, mask=cmask)


@functools.lru_cache(maxsize=256)
def _plan(R: int, D: int, device: torch.device) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_D, programs, warps): ~4K elements per row block; a few programs per SM so
    the backward's weight partials stay few. Cached: eager ViG calls it twice per block and step."""
    block_d = triton.next_power_of_2(D)
    block_r = max(1, min(64, 4096 // block_d, triton.next_power_of_2(R)))
    blocks = triton.cdiv(R, block_r)
    if device.type == "cuda" and not interpret_mode():
        cap = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        cap = 4
    elements = block_r * block_d
    # 4 warps at 4096 elements: the backward's ~10 live rows take 255 registers (sm_90 compile)
    return block_r, block_d, max(1, min(blocks, cap)), 8 if elements > 4096 else 4 if elements >= 2048 else 2


def _as_rows(t: torch.Tensor, D: int) -> torch.Tensor:
    """[..., D] -> [R, D] with unit channel stride and one row stride (a view where possible)."""
    return (t if t.stride(-1) == 1 else t.contiguous()).reshape(-1, D)


def norm_gate_forward(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, x_weight: torch.Tensor,
                      y_weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The mix of ``norm_gate_mix``; [..., D] in x's dtype."""
    D = x.shape[-1]
    xr, yr, gr = (_as_rows(t, D) for t in (x, y, gate))
    R = xr.shape[0]
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if R == 0:
        return out
    block_r, block_d, programs, warps = _plan(R, D, x.device)
    _norm_gate_fwd[(programs,)](xr, yr, gr, x_weight.contiguous(), y_weight.contiguous(), out, R, D,
                                xr.stride(0), yr.stride(0), gr.stride(0), D, eps,
                                BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps)
    return out


def norm_gate_backward(dout: torch.Tensor, x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor,
                       x_weight: torch.Tensor, y_weight: torch.Tensor, eps: float) -> list[torch.Tensor]:
    """[dx, dy, dgate, dx_weight, dy_weight]: each like its input."""
    D = x.shape[-1]
    dr, xr, yr, gr = (_as_rows(t, D) for t in (dout, x, y, gate))
    R = xr.shape[0]
    dx, dy, dg = (torch.empty(t.shape, device=t.device, dtype=t.dtype) for t in (x, y, gate))
    block_r, block_d, programs, warps = _plan(max(R, 1), D, x.device)
    parts = torch.zeros(2, programs, D, device=x.device, dtype=torch.float32)
    if R:
        _norm_gate_bwd[(programs,)](dr, xr, yr, gr, x_weight.contiguous(), y_weight.contiguous(), dx, dy, dg,
                                    parts[0], parts[1], R, D, dr.stride(0), xr.stride(0), yr.stride(0),
                                    gr.stride(0), eps, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps)
    # two reductions, not views of one: a custom op's outputs may not alias each other
    return [dx, dy, dg, parts[0].sum(0).to(x_weight.dtype), parts[1].sum(0).to(y_weight.dtype)]
