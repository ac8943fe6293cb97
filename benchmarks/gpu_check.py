"""Correctness of the Triton paths on the GPU in bf16, at benchmark-like sizes.

For each op: outputs and input gradients of the kernel path (bf16) against the reference path
(``FOVEAL_FORCE_REFERENCE=1``) run in fp32 on the same inputs; relative Frobenius error.
Then zoo models: logits with ``use_kernels`` on vs off under bf16 autocast, channels-last.
Usage: python benchmarks/gpu_check.py
"""
import os
import time

import torch

import ops
import timm
import zoo  # noqa: F401

dev = "cuda"
torch.manual_seed(0)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def check(name, fn, *inputs, tol=2e-2):
    t0 = time.time()
    xs = [t.to(dev, torch.bfloat16).requires_grad_(t.is_floating_point() and t.dim() > 2) for t in inputs]
    out = fn(*xs)
    grad = torch.randn_like(out)
    gk = torch.autograd.grad(out, [x for x in xs if x.requires_grad], grad)
    os.environ["FOVEAL_FORCE_REFERENCE"] = "1"
    try:
        ys = [x.detach().float().requires_grad_(x.requires_grad) for x in xs]
        ref = fn(*ys)
        gr = torch.autograd.grad(ref, [y for y in ys if y.requires_grad], grad.float())
    finally:
        del os.environ["FOVEAL_FORCE_REFERENCE"]
    errs = [rel(out, ref)] + [rel(a, b) for a, b in zip(gk, gr)]
    ok = all(e < tol for e in errs) and torch.isfinite(out).all().item()
    print(f"{'PASS' if ok else 'FAIL'} {name}: out {errs[0]:.2e} grads {', '.join(f'{e:.2e}' for e in errs[1:])} "
          f"({time.time() - t0:.0f}s)", flush=True)


q = lambda *s: torch.randn(*s)
check("na2d 96x96 k17 H24 D128", lambda a, b, c: ops.na2d(a, b, c, kernel_size=17), q(1, 96, 96, 24, 128), q(1, 96, 96, 24, 128), q(1, 96, 96, 24, 128))
check("na2d 56x56 k7 B8 H4 D32", lambda a, b, c: ops.na2d(a, b, c, kernel_size=7), q(8, 56, 56, 4, 32), q(8, 56, 56, 4, 32), q(8, 56, 56, 4, 32))
check("gna3d 8x16x24 k(4,8,8) s(2,4,4) causal-t dil(1,2,1) GQA+extraKV", lambda a, b, c, ek, ev: ops.na3d(
    a, b, c, kernel_size=(4, 8, 8), stride=(2, 4, 4), dilation=(1, 2, 1), is_causal=(True, False, False),
    additional_keys=ek, additional_values=ev), q(1, 8, 16, 24, 8, 64), q(1, 8, 16, 24, 2, 64), q(1, 8, 16, 24, 2, 64),
    q(1, 7, 2, 64), q(1, 7, 2, 64))
check("na3d 10x24x40 k(7,15,15) H4 D128", lambda a, b, c: ops.na3d(a, b, c, kernel_size=(7, 15, 15)),
      q(1, 10, 24, 40, 4, 128), q(1, 10, 24, 40, 4, 128), q(1, 10, 24, 40, 4, 128))
# 32-key boxes (``_fwd_key_rows``) on a TMA walk of 2304 tokens
check("na3d 12x24x40 k(7,15,15) H4 D128", lambda a, b, c: ops.na3d(a, b, c, kernel_size=(7, 15, 15)),
      q(1, 12, 24, 40, 4, 128), q(1, 12, 24, 40, 4, 128), q(1, 12, 24, 40, 4, 128))
check("gna2d 96x96 k16 s(8,16) H4 D128", lambda a, b, c: ops.na2d(a, b, c, kernel_size=16, stride=(8, 16)),
      q(1, 96, 96, 4, 128), q(1, 96, 96, 4, 128), q(1, 96, 96, 4, 128))
idx = {}


def bra(a, b, c):
    if "i" not in idx:
        out, idx["i"] = ops.routing_attention(a, b, c, num_regions=7, topk=4, return_indices=True)
        return out
    return ops.routing_attention(a, b, c, num_regions=7, topk=4, routing_indices=idx["i"].to(a.device))


check("bra B16 28x28 C128 topk4", bra, q(16, 28, 28, 128), q(16, 28, 28, 128), q(16, 28, 28, 128))
qr, kr = (torch.randn(64, 56, 56, 64, device=dev) for _ in range(2))
fused = ops.routing_attention(qr, kr, kr, 7, 4, return_indices=True)[1]
plain = ops.routing.region_routing(qr, kr, (7, 7), 4, 64 ** -0.5)
same = (fused.sort(-1).values == plain.sort(-1).values).float().mean().item()
print(f"{'PASS' if same > 0.999 else 'FAIL'} bra routing fused vs torch (fp32, B64 56x56 topk4): {same:.4%} identical", flush=True)
C = 64
w = [q(C, 1, 5, 5) * 0.2, q(C) * 0.1, q(C, 1, 7, 7) * 0.1, q(C) * 0.1, q(C, C, 1, 1) * 0.1, q(C) * 0.1]
for layout in (torch.contiguous_format, torch.channels_last):
    x = q(16, C, 56, 56).contiguous(memory_format=layout)
    check(f"lka B16 C64 56x56 {layout}", lambda x, *ws: ops.large_kernel_attention(x.contiguous(memory_format=layout), *ws), x, *w)
check("radial wan 12 frames x 780 tokens H4 D128 decay 0.2 (ragged last block)", lambda a, b, c: ops.radial_attention(
    a, b, c, 12, 0.2), q(1, 12 * 780, 4, 128), q(1, 12 * 780, 4, 128), q(1, 12 * 780, 4, 128))
bsm = torch.rand(2, 40, 40, generator=torch.Generator().manual_seed(0)) < 0.3
bsm[1, 3] = False                                                         # an empty row
check("block-sparse B2 N2500 block 64 H2 D64 density 0.3", lambda a, b, c: ops.block_sparse_attention(
    a, b, c, bsm.to(dev), 64), q(2, 2500, 2, 64), q(2, 2500, 2, 64), q(2, 2500, 2, 64))
bsh = torch.rand(1, 2, 40, 40, generator=torch.Generator().manual_seed(1)) < 0.3
bsh[0, 0, 5] = False                                                      # an empty row in head 0
check("block-sparse per-head masks B2 N2500 block 64 H2 D64 density 0.3", lambda a, b, c: ops.block_sparse_attention(
    a, b, c, bsh.to(dev), 64), q(2, 2500, 2, 64), q(2, 2500, 2, 64), q(2, 2500, 2, 64))
g_mild = lambda *s: torch.nn.functional.logsigmoid(torch.randn(*s)) / 16   # ViG's gates: whole-chunk path
g_sharp = lambda *s: torch.nn.functional.logsigmoid(3 * torch.randn(*s))   # 16-row sub-block path
for gname, gate in (("vig gates", g_mild), ("sharp gates", g_sharp)):
    check(f"gla bidirectional B8 T3136 H6 K32 V64 {gname}", lambda a, b, c, g, rg: ops.gated_linear_attention(
        a, b, c, g, 0.1, "bidirectional", rg), q(8, 3136, 6, 32), q(8, 3136, 6, 32), q(8, 3136, 6, 64),
        gate(8, 3136, 6, 32), gate(8, 3136, 6, 32))
for name in ("van_b0", "biformer_tiny", "vig_tiny"):
    x = torch.randn(8, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    m = timm.create_model(name).to(dev).eval().to(memory_format=torch.channels_last)
    for mod in m.modules():   # ViG at its init: GLA outputs ~1e-7 vanish in g_norm's eps; make them count
        if type(mod).__name__ == "GatedLinearAttention":
            mod.in_proj[0].weight.data.normal_(0.0, 1 / 3)
            mod.qkv_proj.weight.data.normal_(0.0, mod.dim ** -0.5)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        on = m(x)
        m.set_use_kernels(False)
        off = m(x)
    print(f"{'PASS' if rel(on, off) < 3e-2 else 'FAIL'} {name} logits kernels on vs off (bf16 autocast): {rel(on, off):.2e}", flush=True)
