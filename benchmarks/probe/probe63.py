"""probe63: radial attention at Wan's sizes (H12 D128 bf16) on the GPU.

1. The block-sparse core with the natural block order against the visit order
   (``block_index.visit_order``, longest lists first), in one process, alternating, fwd and fwd+bwd;
   since 3d4a1d5 also the core's sequence path with TMA loads against pointer loads
   (``block_sparse.USE_TMA``).
2. What TMA loads would buy: two minimal ordered variable-length forward kernels written for this
   case only (1-D sequence, 128-token blocks, one scalar block id per streamed step), one with
   pointer loads and one with device-side tensor descriptors, against the core's forward.

    python3 benchmarks/probe/probe63.py [--rounds 3]
"""
import sys

import torch
import triton
import triton.language as tl
import triton.testing

import ops
from ops.block_sparse import attend_lists, block_mask_to_index, visit_order
from ops.common import block_sparse as core

DECAY = 0.2
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def _cfgs():
    return [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=st)
            for bn in (64, 128) for w in (4, 8) for st in (2, 3)]


@triton.autotune(configs=_cfgs(), key=["N", "H", "HEAD_DIM", "NK", "TMA"])
@triton.jit
def _mini_fwd(Q, K, V, O, IDX, ORD, N, H, qk_scale, NK: tl.constexpr, NK_P2: tl.constexpr,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TMA: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    tile = tl.load(ORD + pid)
    C = H * HEAD_DIM
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    base = b.to(tl.int64) * N * C
    if TMA:
        qd = tl.make_tensor_descriptor(Q + base, shape=[N, C], strides=[C, 1], block_shape=[BLOCK_M, HEAD_DIM])
        kd = tl.make_tensor_descriptor(K + base, shape=[N, C], strides=[C, 1], block_shape=[BLOCK_N, HEAD_DIM])
        vd = tl.make_tensor_descriptor(V + base, shape=[N, C], strides=[C, 1], block_shape=[BLOCK_N, HEAD_DIM])
        q = qd.load([tile * BLOCK_M, h * HEAD_DIM])
    else:
        q = tl.load(Q + base + offs_m[:, None] * C + h * HEAD_DIM + offs_d[None, :], mask=offs_m[:, None] < N,
                    other=0.0)
    slot = tl.arange(0, NK_P2)
    row = IDX + tile * NK
    length = tl.sum((tl.load(row + slot, mask=slot < NK, other=2147483647) != 2147483647).to(tl.int32), 0)
    STEPS: tl.constexpr = BLOCK_M // BLOCK_N
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for j in range(0, length * STEPS):
        start = tl.load(row + j // STEPS) * BLOCK_M + (j % STEPS) * BLOCK_N
        offs_n = start + tl.arange(0, BLOCK_N)
        if TMA:
            k = kd.load([start, h * HEAD_DIM])
            v = vd.load([start, h * HEAD_DIM])
        else:
            ptr = base + offs_n[:, None] * C + h * HEAD_DIM + offs_d[None, :]
            k = tl.load(K + ptr, mask=offs_n[:, None] < N, other=0.0)
            v = tl.load(V + ptr, mask=offs_n[:, None] < N, other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(offs_n[None, :] < N, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + base + offs_m[:, None] * C + h * HEAD_DIM + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=offs_m[:, None] < N)


def mini(q, k, v, index, order, tma):
    B, N, H, D = q.shape
    out = torch.empty_like(q)
    nq, nk = index.shape[-2:]
    _mini_fwd[(nq, B * H)](q, k, v, out, index, order, N, H, D ** -0.5 * 1.4426950408889634, NK=nk,
                           NK_P2=triton.next_power_of_2(nk), HEAD_DIM=D, BLOCK_M=128, TMA=tma)
    return out


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    for tpf in (1560, 3600):
        n = 21 * tpf
        gen = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(1, n, 12, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
                       for _ in range(4))
        mask = ops.radial_block_mask(21, tpf, 128, DECAY).cuda()
        index = block_mask_to_index(mask[None])
        nb = index.shape[-2]
        natural = (torch.arange(2 * nb, device="cuda", dtype=torch.int32) % nb)[None]
        visit = visit_order(index, nb)
        variants = {"natural": (natural, True), "visit": (visit, True), "visit-ptr": (visit, False)}
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        dense = bench(lambda: torch.nn.functional.scaled_dot_product_attention(
            *(t.transpose(1, 2) for t in (q, k, v))))
        density = mask.float().mean().item()
        print(f"\ntpf {tpf}: N {n}, block density {density:.4f}, sdpa default (dense) fwd {dense:.3f} ms")
        ref = attend_lists(q, k, v, index, visit, 128)
        times, tuned = {}, {}
        for r in range(ROUNDS):
            for name, (order, tma) in variants.items():
                core.USE_TMA = tma
                fwd = bench(lambda: attend_lists(q, k, v, index, order, 128))
                err = ((attend_lists(q, k, v, index, order, 128).float() - ref.float()).norm() / ref.float().norm())

                def fb():
                    for t in leaves:
                        t.grad = None
                    attend_lists(*leaves, index, order, 128).backward(do)
                times.setdefault(name, []).append((fwd, bench(fb)))
                if r == 0:
                    print(f"  {name}: rel. err. vs visit/TMA {err.item():.2e}")
                    tuned[name] = [str(launcher.configs[key]) for launcher in (core._bs_fwd, core._bs_bwd_dq,
                                                                               core._bs_bwd_dkv)
                                   for key in list(launcher.configs)[-1:]]
            core.USE_TMA = True
            for tma in (False, True):
                name = "mini-tma" if tma else "mini-ptr"
                try:
                    out = mini(q, k, v, index, visit, tma)
                    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                    times.setdefault(name, []).append((bench(lambda: mini(q, k, v, index, visit, tma)), err))
                    tuned[name] = str(_mini_fwd.best_config)
                except Exception as e:   # noqa: BLE001 - report and go on
                    print(f"{name} failed: {type(e).__name__}: {str(e)[:300]}")
                    times.setdefault(name, []).append((float("nan"), float("nan")))
        for name, rows in times.items():
            cells = ", ".join(f"{a:.3f}/{b:.3g}" for a, b in rows)
            best = min(a for a, _ in rows)
            print(f"  {name:9s} (fwd ms / fwd+bwd ms or rel. err. vs the core): {cells};"
                  f" best fwd {best:.3f} = {dense * density / best:.0%} of the dense per-FLOP rate")
        print(f"  tuned: {tuned}")


if __name__ == "__main__":
    main()
