"""Plain-PyTorch reference of the fused norm-gate mix (the CPU path and the tests' oracle)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def norm_gate_mix_reference(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, x_weight: torch.Tensor,
                            y_weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``rms_norm(x) * x_weight * s + rms_norm(y) * y_weight * (1 - s)`` with ``s = sigmoid(gate)``.

    x, y, gate: [..., D]; weights: [D]. Everything in fp32 (fp64 for fp64 x), RMS over the last
    dim; the result in x's dtype.
    """
    math = torch.float64 if x.dtype == torch.float64 else torch.float32
    d = x.shape[-1]
    s = torch.sigmoid(gate.to(math))
    nx = F.rms_norm(x.to(math), (d,), x_weight.to(math), eps)
    ny = F.rms_norm(y.to(math), (d,), y_weight.to(math), eps)
    return (nx * s + ny * (1 - s)).to(x.dtype)
