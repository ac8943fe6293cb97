"""Probe (session 29, for the next GPU session): the depthwise conv's eager program and where its
Triton kernels could replace cuDNN's depthwise 3x3s, in one process per question.

- ``host``: ``ops.depthwise_conv2d``'s eager program (``ConvProgram``, 0009d0d) against its generic
  launches: CPU us per forward+backward and per inference call, and do_bench ms of the
  forward+backward, at VAN's MLP 3x3 shapes and BEVANet-S's strips (``ab.eager_host_ab``).
- ``van-compiled``: VAN's MLP 3x3 under ``torch.compile(mode="reduce-overhead")``: a model whose
  ``DWConv`` modules run the Triton conv against one that keeps cuDNN's (since 926796a the
  compiled path keeps cuDNN: session 29 measured 5.89 / 16.07 ms of CUDA-graph inference with the
  Triton conv against 5.66 / 15.52 without it, on two machines). Same weights, alternating.
- ``bevanet``: BEVANet-S at 1024x2048, batch 1 (inference): its depthwise 3x3s (the MLP's and
  CKS's, which stay on cuDNN) on the Triton conv against cuDNN, eager bf16 and under CUDA graphs.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe69.py host van-compiled bevanet
    TRITON_INTERPRET=1 PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe69.py --check
"""
import statistics
import sys
import types

import timm
import torch

import ops
import zoo.bevanet as bevanet
import zoo.van as van

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _triton_dw(self, x):
    """A depthwise conv module's forward through ``ops.depthwise_conv2d`` (VAN's ``DWConv`` and
    BEVANet's ``DepthwiseConv`` both hold the conv as ``self.dwconv``)."""
    conv = self.dwconv
    return ops.depthwise_conv2d(x, conv.weight, conv.bias, conv.dilation[0])


def _cudnn_dw(self, x):
    return self.dwconv(x)


def _set_dw(model: torch.nn.Module, cls: type, forward) -> int:
    """Give every ``cls`` module of ``model`` that is not already on the Triton kernels (BEVANet's
    SDLSKA strips are) ``forward``, as an instance attribute so two models of one class can differ;
    returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, cls) and not getattr(m, "triton", False):
            m.forward = types.MethodType(forward, m)
            n += 1
    return n


def _pair(name: str, cls: type, **kwargs):
    """Two copies of one model (same weights, channels-last): (cuDNN's 3x3s, Triton's)."""
    torch.manual_seed(0)
    a = timm.create_model(name, **kwargs).to(DEVICE).to(memory_format=torch.channels_last).eval()
    b = timm.create_model(name, **kwargs).to(DEVICE).to(memory_format=torch.channels_last).eval()
    b.load_state_dict(a.state_dict())
    n = _set_dw(a, cls, _cudnn_dw)
    assert _set_dw(b, cls, _triton_dw) == n > 0
    return a, b


def check():
    """CPU: the Triton 3x3 arm (the interpreter's kernels) equals cuDNN's arm on both models."""
    for name, cls, size in (("van_b0", van.DWConv, (1, 3, 64, 64)), ("bevanet_s", bevanet.DepthwiseConv, (1, 3, 64, 128))):
        a, b = _pair(name, cls, num_classes=5)
        x = torch.randn(*size).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ya, yb = a(x), b(x)
        ya, yb = (y[0] if isinstance(y, (list, tuple)) else y for y in (ya, yb))
        err = ((ya - yb).norm() / ya.norm()).item()
        print(f"{name}: Triton 3x3 arm against cuDNN's, relative difference {err:.2e}")
        assert err < 1e-4, name


def host():
    from ab import eager_host_ab
    import ops.lka.eager as eager
    real = eager.conv_program_for
    shapes = [(128, 256, 56, 56, (3, 3), 1), (128, 512, 28, 28, (3, 3), 1), (128, 1024, 28, 28, (3, 3), 1),
              (1, 64, 128, 256, (5, 5), 1), (1, 64, 128, 256, (1, 7), 3), (1, 128, 64, 128, (7, 1), 3)]
    print("depthwise conv, bf16 x, fp32 parameters: generic launches / program; CPU us per call, ms")
    for b, c, h, w, k, d in shapes:
        x = torch.randn(b, c, h, w, device="cuda", dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last).requires_grad_(True)
        wt = (torch.randn(c, 1, *k, device="cuda") * 0.2).requires_grad_(True)
        bias = torch.randn(c, device="cuda").requires_grad_(True)
        g = torch.randn_like(x)

        def arm(use_program):
            def fb():
                eager.conv_program_for = real if use_program else (lambda *a: None)
                ops.depthwise_conv2d(x, wt, bias, d).backward(g)

            def inf():
                eager.conv_program_for = real if use_program else (lambda *a: None)
                with torch.no_grad():
                    ops.depthwise_conv2d(x, wt, bias, d)
            return fb, inf
        (fb_b, inf_b), (fb_n, inf_n) = arm(False), arm(True)
        m = eager_host_ab(fb_b, fb_n, inf_b, inf_n)
        print(f"B{b} C{c} {h}x{w} {k[0]}x{k[1]} d{d}: fwd+bwd CPU {m['fb_b']:.0f} / {m['fb_n']:.0f} us, "
              f"inference CPU {m['inf_b']:.0f} / {m['inf_n']:.0f} us, fwd+bwd {m['ms_b']:.3f} / {m['ms_n']:.3f} ms",
              flush=True)
    eager.conv_program_for = real


def _alternate(fa, fb, rounds=5, rep=200):
    from triton.testing import do_bench
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(do_bench(fa, warmup=25, rep=rep))
        tb.append(do_bench(fb, warmup=25, rep=rep))
    return statistics.median(ta), statistics.median(tb)


def _infer_ab(a, b, x, compile_mode=None):
    """(ms of model a, ms of model b): bf16 inference, alternating, each compiled with
    ``compile_mode`` first when given."""
    runs = []
    for m in (a, b):
        if compile_mode is not None:
            m.compile(mode=compile_mode)

        def run(m=m):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                return m(x)
        runs.append(run)
    return _alternate(*runs)


def van_compiled():
    for name in ("van_b0", "van_b2"):
        a, b = _pair(name, van.DWConv)
        x = torch.randn(128, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
        ta, tb = _infer_ab(a, b, x, "reduce-overhead")
        print(f"{name} CUDA-graph inference b128: cuDNN 3x3 {ta:.3f} ms, Triton 3x3 {tb:.3f} ms", flush=True)


def bevanet_s():
    x = torch.randn(1, 3, 1024, 2048, device="cuda").contiguous(memory_format=torch.channels_last)
    for mode in (None, "reduce-overhead"):
        a, b = _pair("bevanet_s", bevanet.DepthwiseConv)
        ta, tb = _infer_ab(a, b, x, mode)
        print(f"bevanet_s {mode or 'eager'} bf16 b1 1024x2048: cuDNN 3x3s {ta:.3f} ms, Triton {tb:.3f} ms",
              flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    else:
        parts = {"host": host, "van-compiled": van_compiled, "bevanet": bevanet_s}
        for part in [a for a in sys.argv[1:] if a in parts] or list(parts):
            parts[part]()
