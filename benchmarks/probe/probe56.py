"""Probe (session 21, for the next GPU session): VAN's 1x1 convolutions on the kernel path, three ways,
in VAN's eager training step (one process, alternating rounds, as probe55).

VAN's eager step with kernels is bound by the host (probe26: ~1,250 launches per VAN-b0 step;
probe55: 0.93x the plain path's speed on a slow host). ``zoo.van.pointwise`` runs each 1x1 as
``F.linear`` over the channels-last map's [B, H, W, C] view: under autocast that is ~6 autograd
nodes per 1x1 (two permutes, three casts, the addmm) for 52 1x1s per VAN-b0 step. Candidates:

- ``linear``: the current ``pointwise``;
- ``conv``: cuDNN's 1x1 convolution (one node; probe28 measured it faster on some hosts and
  +6% GPU busy time, session 11);
- ``lean``: one ``autograd.Function`` doing what autocast and ``F.linear`` do (casts to the autocast
  dtype, one addmm; backward: two matmuls, a sum and the casts back), so one node per 1x1.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe56.py [van_b0 van_b2]
    python benchmarks/probe/probe56.py --check     # CPU: lean == linear, forward and gradients
"""
import os
import sys

import torch

import zoo.van as van  # registers the VAN models with timm


def _linear(conv, x, as_matmul):
    """``zoo.van.pointwise`` as of session 21: F.linear over the channels-last map's channel axis."""
    if as_matmul and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        y = torch.nn.functional.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
        return y.permute(0, 3, 1, 2)
    return conv(x)


_current = van.pointwise


class _LeanPointwise(torch.autograd.Function):
    """y = x @ W^T + b over the channels of a channels-last [B, C, H, W] map, in the autocast dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        b, c, h, w = x.shape
        dt = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        x2 = x.permute(0, 2, 3, 1).reshape(-1, c).to(dt)
        w2 = weight.flatten(1).to(dt)
        with torch.autocast(x.device.type, enabled=False):
            y = torch.addmm(bias.to(dt), x2, w2.t())
        ctx.save_for_backward(x2, w2)
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        ctx.wshape = weight.shape
        return y.view(b, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        x2, w2 = ctx.saved_tensors
        xd, wd, bd = ctx.dtypes
        b, co, h, w = grad.shape
        g2 = grad.to(w2.dtype).permute(0, 2, 3, 1).reshape(-1, co)
        with torch.autocast(grad.device.type, enabled=False):
            dx = (g2 @ w2).view(b, h, w, -1).permute(0, 3, 1, 2).to(xd)
            dw = (g2.t() @ x2).to(wd).view(ctx.wshape)
            db = g2.sum(0, dtype=torch.float32).to(bd)
        return dx, dw, db


def _lean(conv, x, as_matmul):
    if as_matmul and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return _LeanPointwise.apply(x, conv.weight, conv.bias)
    return conv(x)


def _conv(conv, x, as_matmul):
    return conv(x)


ARMS = {"linear": _linear, "conv": _conv, "lean": _lean}


def check():
    """lean against linear on CPU, fp32 (exact up to summation order) and bf16 autocast."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 40, 1)
    x = torch.randn(2, 24, 5, 7).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 40, 5, 7)
    for autocast in (False, True):
        res = []
        for fn in (_linear, _lean):
            xl = x.clone().requires_grad_(True)
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                y = fn(conv, xl, True)
            y.backward(g.to(y.dtype))
            res.append([y.float(), xl.grad, conv.weight.grad.clone(), conv.bias.grad.clone()])
        for name, a, b in zip(("y", "dx", "dw", "db"), *res):
            err = ((a - b).norm() / b.norm()).item()
            print(f"autocast={autocast} {name}: relative difference {err:.2e}")
            assert err < (1e-2 if autocast else 1e-6), name


def main():
    from ab import alternating_arms  # the script's folder is on sys.path
    from tasks.bench.suites.models import _build, _infer, _train_step
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (128,), device="cuda")
    rep = int(os.environ.get("PROBE_REP_MS", "1500"))
    infer = "--infer" in sys.argv   # (session 22) inference steps too
    for name in [a for a in sys.argv[1:] if not a.startswith("--")] or ["van_b0", "van_b2"]:
        torch.manual_seed(0)
        model = _build(name, "cuda", True)
        for mode in ("train", "infer") if infer else ("train",):
            step = _train_step(model, x, target, torch.bfloat16) if mode == "train" else _infer(model, x, torch.bfloat16)
            med = alternating_arms(step, {arm: (lambda fn=fn: setattr(van, "pointwise", fn))
                                          for arm, fn in ARMS.items()}, rep=rep)
            print(f"{name} {mode} b128: " + " | ".join(f"{arm} {t:.2f} ms (CPU {c:.2f})" for arm, (t, c) in med.items()),
                  flush=True)
    van.pointwise = _current


if __name__ == "__main__":
    check() if "--check" in sys.argv else main()
