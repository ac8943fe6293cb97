"""probe60: gated linear attention on the GPU: accuracy against fla and the fp32 reference, and the
time of each kernel (state scans, chunk outputs, chunk gradients, gate gradients) on the bench cases.

    python3 benchmarks/probe/probe60.py           # accuracy and per-kernel times
    python3 benchmarks/probe/probe60.py --check   # forward and every gradient vs the fp32 reference only
"""
import sys

import torch
import torch.nn.functional as F
import triton.testing

from ops.gla import gated_linear_attention, gated_linear_attention_reference
from ops.gla import kernels as K


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


if "--check" in sys.argv:
    # ViG's head dims (K 32, V 64) and ViG-H's (16, 32); mild (whole-chunk) and sharp (sub-block) gates
    for (B, T, H, Kd, Vd), dtype, sharp in [((4, 3136, 3, 32, 64), torch.bfloat16, None),
                                            ((4, 3136, 3, 32, 64), torch.bfloat16, 3.0),
                                            ((2, 1000, 3, 16, 32), torch.float16, None),
                                            ((2, 1000, 3, 16, 32), torch.float32, 3.0)]:
        gen = torch.Generator(device="cuda").manual_seed(1)
        leaves = [torch.randn(B, T, H, d, device="cuda", generator=gen) for d in (Kd, Kd, Vd)]
        logits = [torch.randn(B, T, H, Kd, device="cuda", generator=gen) for _ in range(2)]
        leaves += [F.logsigmoid(x) / 16 if sharp is None else F.logsigmoid(sharp * x) for x in logits]
        do = torch.randn(B, T, H, Vd, device="cuda", generator=gen)
        ours = [t.to(dtype).requires_grad_() for t in leaves]
        ref = [t.detach().clone().requires_grad_() for t in leaves]
        o = gated_linear_attention(*ours[:4], 0.1, "bidirectional", ours[4])
        o_ref = gated_linear_attention_reference(*ref[:4], 0.1, "bidirectional", ref[4])
        gs = torch.autograd.grad(o, ours, do.to(dtype))
        gs_ref = torch.autograd.grad(o_ref, ref, do)
        errs = [rel(o, o_ref)] + [rel(a, b) for a, b in zip(gs, gs_ref)]
        print(f"check {dtype} K{Kd} V{Vd} gates {'vig' if sharp is None else 'sharp'}: o, dq, dk, dv, dg, drg rel "
              + " ".join(f"{e:.1e}" for e in errs), "finite" if all(torch.isfinite(t).all() for t in (o, *gs)) else
              "NON-FINITE")
    sys.exit(0)

try:
    from fla.ops.gla import chunk_gla
except Exception as err:  # noqa: BLE001
    chunk_gla = None
    print("fla not importable:", err)

for B, T, H, D in [(8, 3136, 6, 64), (4, 16384, 8, 64), (128, 196, 6, 32)]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
    g, rg = (F.logsigmoid(torch.randn(B, T, H, D, device="cuda", generator=gen)).to(torch.bfloat16) / 16
             for _ in range(2))
    s = D ** -0.5
    print(f"== B{B} T{T} H{H} D{D} bf16")
    if T * B <= 30000:
        ref = gated_linear_attention_reference(*(t.float() for t in (q, k, v, g)), s, "bidirectional", rg.float())
        ours = gated_linear_attention(q, k, v, g, s, "bidirectional", rg)
        print(f"  bidirectional vs fp32 reference: rel {rel(ours, ref):.2e}")
    ours_c = gated_linear_attention(q, k, v, g, s)
    if chunk_gla is not None:
        o_fla = chunk_gla(q, k, v, g, scale=s)[0]
        print(f"  causal vs fla chunk_gla: rel {rel(ours_c, o_fla):.2e}")
    for name, gf, gb in (("bidir", g, rg), ("causal", g, None)):
        ndir = 1 + (gb is not None)
        o, hs = K.gla_forward(q, k, v, gf, gb, s)
        t_states = bench(lambda: K._scan_states(k, v, gf, gb if gb is not None else gf, ndir, 0, 1.0, False))
        t_fwd = bench(lambda: K.gla_forward(q, k, v, gf, gb, s))
        t_dstates = bench(lambda: K._scan_states(q, do, gf, gb if gb is not None else gf, ndir, 0, s, True))
        t_bwd = bench(lambda: K.gla_backward(do, q, k, v, gf, gb, hs, s))
        print(f"  {name}: fwd {t_fwd:.3f} ms (states {t_states:.3f}, output {t_fwd - t_states:.3f}); "
              f"bwd {t_bwd:.3f} ms (dstates {t_dstates:.3f}, rest {t_bwd - t_dstates:.3f})")
    if chunk_gla is not None:
        print(f"  fla causal fwd {bench(lambda: chunk_gla(q, k, v, g, scale=s)):.3f} ms")
    sharp = F.logsigmoid(3 * torch.randn(B, T, H, D, device="cuda", generator=gen)).to(torch.bfloat16)
    o, hs = K.gla_forward(q, k, v, sharp, sharp, s)
    print(f"  sharp gates (16-row sub-blocks): bidir fwd {bench(lambda: K.gla_forward(q, k, v, sharp, sharp, s)):.3f} "
          f"ms, bwd {bench(lambda: K.gla_backward(do, q, k, v, sharp, sharp, hs, s)):.3f} ms")
