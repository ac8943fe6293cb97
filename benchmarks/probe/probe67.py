"""probe67 (session 28): ViG's output gate fused (``ops.norm_gate_mix``) against the unfused
gate (two fp32 RMSNorms, the sigmoid and the blend as separate operator calls, as before) on the
kernel path, in one process, so both meet the same host. For each model: logits and input
gradients of the fused path against the plain path (bf16 autocast, q/k/v at unit scale so the GLA
output counts), then the eager training step (batch 128 at 224, bf16 autocast, channels-last,
the bench's SGD step): do_bench ms and CPU ms per step, alternating fused / unfused / plain.

    PYTHONPATH=.:benchmarks/probe python benchmarks/probe/probe67.py [vig_tiny vig_h_tiny]
"""
import os
import sys
import types

import torch
import torch.nn.functional as F

import ops
import zoo.vig as vig
from tasks.bench.suites.models import _build, _train_step

from ab import alternating_arms  # the script's folder is on sys.path


def unfused_gate(o, local, g, o_weight, local_weight, eps):
    """The gate as operator calls (the module code before session 28, RMSNorm in fp32)."""
    def rms(t, w):
        return F.rms_norm(t.float(), (t.shape[-1],), w.float(), eps).to(t.dtype)
    s = torch.sigmoid(g)
    return rms(o, o_weight) * s + rms(local, local_weight) * (1 - s)


UNFUSED = types.SimpleNamespace(gated_linear_attention=ops.gated_linear_attention, norm_gate_mix=unfused_gate)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    names = sys.argv[1:] or ["vig_tiny", "vig_h_tiny"]
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for name in names:
        torch.manual_seed(0)
        m = _build(name, "cuda", True)
        for mod in m.modules():   # unit-scale q, k, v: the GLA output is not swamped by g_norm's eps
            if isinstance(mod, vig.GatedLinearAttention):
                mod.in_proj[0].weight.data.normal_(0.0, 1 / 3)
                mod.qkv_proj.weight.data.normal_(0.0, mod.dim ** -0.5)
        x = torch.randn(16, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last).requires_grad_()

        def arm(copy, kernels):
            def use():
                vig.ops = copy
                m.set_use_kernels(kernels)
            return use
        arms = {"fused": arm(ops, True), "unfused": arm(UNFUSED, True), "plain": arm(ops, False)}

        res = {}
        m.eval()
        for label, use in arms.items():
            use()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = m(x)
            res[label] = (out, *torch.autograd.grad(out.float().square().mean(), (x,)))
        vig.ops = ops
        for label in ("fused", "unfused"):
            print(f"{name} {label} vs plain (bf16 autocast, eval mode): logits {rel(res[label][0], res['plain'][0]):.2e}"
                  f"   input grad {rel(res[label][1], res['plain'][1]):.2e}", flush=True)
        xb = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
        step = _train_step(m, xb, torch.bfloat16)
        med = alternating_arms(step, arms, rep=int(os.environ.get("PROBE_REP_MS", "1000")))
        vig.ops = ops
        print(f"{name} train step B128 (ms, CPU ms): " + "   ".join(f"{k} {v[0]:.1f} ({v[1]:.1f})" for k, v in med.items()),
              flush=True)


if __name__ == "__main__":
    main()
