"""Probe (session 29): VAN's MLP depthwise 3x3 on the kernel path, cuDNN (as now) against
``ops.depthwise_conv2d`` (the LKA's Triton row-block kernels), in one process.

Session 5 measured the Triton 3x3 faster for inference and slower for training, with the kernels of
then (before the row-block core and the weight-gradient rules of sessions 9-10). VAN's eager step
is host-bound (session 29: VAN-b0 trained 0.77x the plain path's speed on a slow host), and a cuDNN
convolution costs ~0.2 ms of host time per call, forward and backward.

1. The 3x3 alone at the MLP shapes of VAN-b0 and VAN-b2 (batch 128, channels-last bf16 under
   autocast, fp32 weights): forward and forward+backward ms and CPU ms, cuDNN and Triton.
2. VAN-b0 / VAN-b2 eager training step and inference, alternating arms (``ab.alternating_arms``).

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe68.py [van_b0 van_b2]
    python benchmarks/probe/probe68.py --check      # CPU: the two arms agree (fp32)
"""
import os
import sys

import torch

import ops
import zoo.van as van

_cudnn_forward = van.DWConv.forward


def _triton_forward(self, x):
    return ops.depthwise_conv2d(x, self.dwconv.weight, self.dwconv.bias)


ARMS = {"cudnn": _cudnn_forward, "triton": _triton_forward}


def check():
    """Both arms on CPU (the Triton arm runs its reference there): same output and gradients."""
    torch.manual_seed(0)
    m = van.DWConv(16)
    x = torch.randn(2, 16, 9, 11).contiguous(memory_format=torch.channels_last)
    res = []
    for fn in ARMS.values():
        xl = x.clone().requires_grad_(True)
        m.zero_grad()
        y = fn(m, xl)
        y.backward(torch.ones_like(y))
        res.append([y, xl.grad, m.dwconv.weight.grad.clone(), m.dwconv.bias.grad.clone()])
    for name, a, b in zip(("y", "dx", "dw", "db"), *res):
        err = ((a - b).norm() / b.norm()).item()
        print(f"{name}: relative difference {err:.2e}")
        assert err < 1e-5, name


def op_times():
    from ab import cpu_ms
    from triton.testing import do_bench
    shapes = {"van_b0": [(256, 56), (512, 28), (640, 14), (1024, 7)],
              "van_b2": [(512, 56), (1024, 28), (1280, 14), (2048, 7)]}
    print("3x3 alone, B128 channels-last bf16 (autocast), fp32 weights: ms (CPU ms)")
    for model, dims in shapes.items():
        for c, hw in dims:
            x = torch.randn(128, c, hw, hw, device="cuda", dtype=torch.bfloat16).contiguous(
                memory_format=torch.channels_last).requires_grad_(True)
            m = van.DWConv(c).cuda()
            g = torch.randn_like(x)
            row = []
            for arm, fn in ARMS.items():
                def fwd():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        return fn(m, x)

                def fb():
                    fwd().backward(g)
                with torch.no_grad():
                    t_f = do_bench(fwd, warmup=10, rep=60)
                    c_f = cpu_ms(fwd, 20)
                t_fb = do_bench(fb, warmup=10, rep=60)
                c_fb = cpu_ms(fb, 20)
                row.append(f"{arm} fwd {t_f:.3f} ({c_f:.3f}) fwd+bwd {t_fb:.3f} ({c_fb:.3f})")
            print(f"{model} C{c} {hw}x{hw}: " + " | ".join(row), flush=True)


def main():
    from ab import alternating_arms
    from tasks.bench.suites.models import _build, _infer, _train_step
    op_times()
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    rep = int(os.environ.get("PROBE_REP_MS", "1000"))
    for name in [a for a in sys.argv[1:] if not a.startswith("--")] or ["van_b0", "van_b2"]:
        torch.manual_seed(0)
        model = _build(name, "cuda", True)
        for mode in ("train", "infer"):
            step = _train_step(model, x, torch.bfloat16) if mode == "train" else _infer(model, x, torch.bfloat16)
            med = alternating_arms(step, {arm: (lambda fn=fn: setattr(van.DWConv, "forward", fn))
                                          for arm, fn in ARMS.items()}, rep=rep)
            print(f"{name} {mode} b128: " + " | ".join(f"{arm} {t:.2f} ms (CPU {c:.2f})" for arm, (t, c) in med.items()),
                  flush=True)
    van.DWConv.forward = _cudnn_forward


if __name__ == "__main__":
    check() if "--check" in sys.argv else main()
