"""Random-case campaigns for the kernels, longer than the test suite runs: NA, BRA, LKA and GLA against
their fp64 references, forward and every gradient, on CUDA when present, else under Triton's
CPU interpreter (as the tests). Not collected by pytest; run it by hand:

    python -m tests.fuzz_kernels na --seeds 5000 60          # ranks 1-3, each kernel dtype
    python -m tests.fuzz_kernels na --big --seeds 7000 25    # maps up to 90 / 15x15 / 7x7x7 on CPU
    python -m tests.fuzz_kernels na-op --seeds 0 100         # the public op: autograd, views, LSE grads
    python -m tests.fuzz_kernels bra --seeds 100 300         # public op: padding, strided q/k/v, routing
    python -m tests.fuzz_kernels lka --seeds 1000 150        # LKA, LSKA chains, single depthwise convs
    python -m tests.fuzz_kernels gla --seeds 0 100           # GLA: directions, head dims 1-128, gate mixes
    python -m tests.fuzz_kernels bsa --seeds 0 100           # block-sparse / radial: ragged ends, list lengths
    python -m tests.fuzz_kernels norm-gate --seeds 0 200     # ViG's fused output gate: shapes, strides, eps

Each failing case prints its settings and seed; the exit status is the number of failures.
Low-precision LKA gradients are also accepted when PyTorch's own chain in that dtype errs as
much (within 2x), and parameter gradients when their error is within one rounding step (the
dtype's eps) of the input gradient's norm: a bias or weight gradient is a sum over the map and
may cancel to a small value.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before ops defines its kernels

import torch.nn.functional as F  # noqa: E402

import ops  # noqa: E402
from tests.ops.helpers import TOLERANCE, assert_close, kernel_dtypes, relative_error  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _na_tests(big: bool):
    """The NA test module, whose random cases the campaigns draw; ``big`` widens its CPU map sizes."""
    import tests.ops.test_neighborhood as na_tests
    if big and DEVICE == "cpu":
        na_tests.MAX_LEN = {1: 90, 2: 15, 3: 7}
    return na_tests


def _na_load_path(tma: bool):
    """Set the NA walks' load path: TMA descriptors on every walk (16-bit, where the layout allows)
    or pointer loads everywhere; returns the settings to restore."""
    import ops.neighborhood.kernels as K
    before = (K.USE_TMA, K.TMA_MIN_WALK)
    K.USE_TMA, K.TMA_MIN_WALK = tma, 0
    return before


def _restore_na_load_path(before) -> None:
    import ops.neighborhood.kernels as K
    K.USE_TMA, K.TMA_MIN_WALK = before


def fuzz_na(seed: int, big: bool) -> None:
    na_tests = _na_tests(big)
    for rank in (1, 2, 3):
        for dtype in kernel_dtypes():
            case = na_tests._random_case(random.Random(seed * 7 + rank), rank)
            case["tma"] = random.Random(seed * 11 + rank).random() < 0.5   # the walks' load path
            gen = torch.Generator().manual_seed(seed)
            before = _na_load_path(case["tma"])
            try:
                na_tests._check_against_reference(case, dtype, DEVICE, gen, seed)
            finally:
                _restore_na_load_path(before)


def fuzz_na_op(seed: int, big: bool) -> None:
    """The public ``ops.neighborhood_attention`` with autograd (eager dispatch, layouts, LSE gradient)
    against itself in fp64, which runs the reference: per-axis or scalar window arguments, q/k/v
    as strided views (slices of one projection, or a heads-first tensor permuted)."""
    na_tests = _na_tests(big)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    rank = rng.randint(1, 3)
    c = na_tests._random_case(rng, rank)
    dtype = rng.choice(kernel_dtypes())
    b, shape, h, hkv, d, dv = c["batch"], c["shape"], c["heads"], c["kv_heads"], c["dim"], c["dim_v"]
    layout = rng.choice(["contiguous", "qkv slices", "heads first"])
    if layout == "qkv slices":   # one projection: value heads as wide as the query's
        dv = d
    base = [torch.randn(b, *shape, n, e, generator=gen) for n, e in ((h, d), (hkv, d), (hkv, dv))]
    extra = [torch.randn(b, c["extra"], hkv, e, generator=gen) for e in (d, dv)] if c["extra"] else []
    window = {name: c[key] if len(set(c[key])) > 1 or rng.random() < 0.5 else c[key][0]
              for name, key in (("kernel_size", "kernel"), ("dilation", "dilation"), ("stride", "stride"),
                                ("is_causal", "causal"))}
    tma = rng.random() < 0.5   # the walks' load path (TMA on 16-bit aligned layouts, else pointers)
    case = dict(seed=seed, layout=layout, dtype=dtype, shape=shape, heads=(h, hkv), dims=(d, dv),
                extra=c["extra"], tma=tma, **window)

    def run(dt):
        """Forward (out, lse) and the leaves' gradients in ``dt``, q/k/v laid out as ``layout`` says."""
        leaves = [t.detach().to(DEVICE, dt).requires_grad_(True) for t in (*base, *extra)]
        views = list(leaves)
        if layout == "qkv slices":
            whole = torch.cat([t.detach() for t in leaves[:3]], dim=-2).requires_grad_(True)
            views[:3] = [whole[..., :h, :], whole[..., h:h + hkv, :], whole[..., h + hkv:, :]]
            leaves[:3] = [whole]
        elif layout == "heads first":
            firsts = [t.detach().movedim(-2, 1).contiguous().requires_grad_(True) for t in leaves[:3]]
            views[:3] = [t.movedim(1, -2) for t in firsts]
            leaves[:3] = firsts
        out, lse = ops.neighborhood_attention(*views[:3], **window, additional_keys=views[3] if extra else None,
                                              additional_values=views[4] if extra else None, return_lse=True)
        g_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE, dt)
        g_lse = torch.randn(lse.shape, generator=torch.Generator().manual_seed(seed + 2)).to(DEVICE, lse.dtype)
        grads = torch.autograd.grad((out, lse), leaves, (g_out, g_lse))
        return out, lse, grads

    before = _na_load_path(tma)
    try:
        out, lse, grads = run(dtype)
    finally:
        _restore_na_load_path(before)
    ref, ref_lse, ref_grads = run(torch.float64)
    assert_close(out, ref, dtype, f"out {case}", seed)
    assert_close(lse, ref_lse, torch.float32 if dtype == torch.float32 else dtype, f"lse {case}", seed)
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g, r, dtype, f"grad {i} {case}", seed)


def fuzz_bra(seed: int, big: bool) -> None:
    from ops.routing import region_routing, routing_attention_reference
    from ops.routing.reference import to_regions
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    top = 40 if big or DEVICE == "cuda" else 11
    B, Y, X = rng.randint(1, 2), rng.randint(2, top), rng.randint(2, top)
    ny, nx = rng.randint(1, min(Y, 4)), rng.randint(1, min(X, 4))
    R, heads = ny * nx, rng.choice([1, 2])
    C, topk = heads * rng.choice([16, 32]), rng.randint(1, ny * nx)
    dtype, scale = rng.choice(kernel_dtypes()), rng.choice([None, 0.3])
    case = dict(seed=seed, B=B, Y=Y, X=X, regions=(ny, nx), heads=heads, C=C, topk=topk, dtype=dtype, scale=scale)
    qkv = torch.randn(B, Y, X, 3 * C, generator=gen).to(DEVICE, dtype).requires_grad_(True)
    q, k, v = qkv.split(C, dim=-1)   # strided views of one projection, as BiFormer's
    qkv64 = qkv.detach().double().requires_grad_(True)
    padded = F.pad(qkv64, (0, 0, 0, (-X) % nx, 0, (-Y) % ny))   # BiFormer's auto_pad
    q64, k64, v64 = padded.split(C, dim=-1)
    sc = (C // heads) ** -0.5 if scale is None else scale
    idx64 = region_routing(q64, k64, (ny, nx), topk, sc)
    # token attention with the fp64 routing, so near-ties cannot pick other regions
    out = ops.routing_attention(q, k, v, (ny, nx), topk, scale=scale, num_heads=heads, routing_indices=idx64)
    grad = torch.randn(out.shape, generator=gen).to(DEVICE, dtype)
    out.backward(grad)
    ref = routing_attention_reference(q64, k64, v64, idx64, (ny, nx), heads, sc)[:, :Y, :X]
    ref.backward(grad.double())
    assert_close(out, ref, dtype, f"out {case}", seed)
    assert_close(qkv.grad, qkv64.grad, dtype, f"d qkv {case}", seed)
    # the op's own routing: the fp64 top-k sets wherever the k-th and (k+1)-th affinities are apart
    _, idx = ops.routing_attention(q.detach(), k.detach(), v.detach(), (ny, nx), topk, scale=scale,
                                   num_heads=heads, return_indices=True)
    means = [to_regions(t.detach(), (ny, nx)).mean(2) for t in (q64, k64)]
    affinity = (means[0] * sc) @ means[1].transpose(-1, -2)
    ranked = affinity.sort(-1, descending=True).values
    if topk < R:
        gap = ranked[..., topk - 1] - ranked[..., topk]
        clear = gap > (1e-2 if dtype != torch.float32 else 1e-4) * (affinity.abs().amax(-1) + 1)
        same = (idx.cpu().sort(-1).values == idx64.cpu().sort(-1).values).all(-1)
        assert bool((same | ~clear.cpu()).all()), f"routing differs where the top-k is clear: {case}"


def _lka_case(rng: random.Random, gen: torch.Generator, c: int):
    """(kind, fn(x, *params), params as fp32 tensors) of one random LKA-family op."""
    kind = rng.choice(["lka", "lska", "dw"])
    randn = lambda *s, k=1.0: torch.randn(*s, generator=gen) * k  # noqa: E731
    if kind == "lka":
        params = [randn(c, 1, 5, 5, k=0.2), randn(c), randn(c, 1, 7, 7, k=0.15), randn(c), randn(c, c, 1, 1, k=c ** -0.5),
                  randn(c)]
        return kind, ops.large_kernel_attention, params
    if kind == "lska":
        from ops.lka import lska_kernel_sizes
        sizes = lska_kernel_sizes(rng.choice([23, 35]))
        n, dil = len(sizes), [d for _, d in sizes]
        params = [randn(c, 1, *ks, k=0.3) for ks, _ in sizes] + [randn(c) for _ in sizes] + \
                 [randn(c, c, 1, 1, k=c ** -0.5), randn(c)]
        return kind + f"{sizes}", lambda x, *p: ops.separable_large_kernel_attention(
            x, list(p[:n]), list(p[n:2 * n]), dil, p[-2], p[-1]), params
    kh, kw, d = rng.choice([1, 3, 5, 7]), rng.choice([1, 3, 5, 7]), rng.choice([1, 2, 3])
    params = [randn(c, 1, kh, kw, k=0.3)] + ([randn(c)] if rng.random() < 0.5 else [])
    return f"dw {kh}x{kw} d{d}", lambda x, w, b=None: ops.depthwise_conv2d(x, w, b, dilation=d), params


def fuzz_lka(seed: int, big: bool) -> None:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    top = 40 if big or DEVICE == "cuda" else 14
    # 80 channels: two channel blocks of the 1x1 kernel, the second partly masked
    b, c, h, w = rng.randint(1, 2), rng.choice([1, 3, 8, 17, 24, 64, 80]), rng.randint(1, top), rng.randint(1, top)
    dtype = rng.choice(kernel_dtypes())
    fmt = rng.choice([torch.contiguous_format, torch.channels_last])
    kind, fn, params = _lka_case(rng, gen, c)
    case = dict(seed=seed, shape=(b, c, h, w), dtype=dtype, layout=str(fmt), kind=kind)
    x = torch.randn(b, c, h, w, generator=gen)
    grad = torch.randn(b, c, h, w, generator=gen)

    def run(dt, force_reference=False):
        leaves = [t.to(DEVICE, dt).requires_grad_(True) for t in (x, *params)]
        leaves[0] = leaves[0].detach().contiguous(memory_format=fmt).requires_grad_(True)
        if force_reference:
            os.environ["FOVEAL_FORCE_REFERENCE"] = "1"
        try:
            y = fn(*leaves)
            return y, torch.autograd.grad(y, leaves, grad.to(DEVICE, dt))
        finally:
            os.environ.pop("FOVEAL_FORCE_REFERENCE", None)

    y, grads = run(dtype)
    ref, ref_grads = run(torch.float64)
    assert y.is_contiguous(memory_format=fmt), f"layout not kept: {case}"
    assert_close(y, ref, dtype, f"out {case}", seed)
    plain = None
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        err = relative_error(g, r)
        if err > TOLERANCE[dtype] and dtype != torch.float32:
            # a parameter gradient is a sum over the map whose terms carry the map gradient's
            # rounding: measured against one rounding step of that scale (the input gradient's
            # norm), not against a sum that happens to cancel (seeds 3038, 3095: C = 1, sums at
            # 1e-3 of their terms' scale; errors 4-45x below this bound)
            if i > 0 and (g.double().cpu() - r.cpu()).norm() <= torch.finfo(dtype).eps * ref_grads[0].norm().cpu():
                continue
            plain = plain or run(dtype, force_reference=True)[1]
            if err <= 2 * relative_error(plain[i], r):
                continue
        assert_close(g, r, dtype, f"grad {i} {case}", seed)


def fuzz_gla(seed: int, big: bool) -> None:
    """The public ``ops.gated_linear_attention`` with autograd against the fp64 chunked reference
    (itself checked against the recurrence in the tests): any direction, head dims 1-128 (key and
    value apart), lengths across chunk edges, q/k/v as slices of one projection, and gates that
    are ViG's mild ones, sharp ones, or change from one to the other mid-sequence (so one call
    takes both the whole-chunk and the sub-block path)."""
    from ops.gla import gated_linear_attention_reference

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    top = 600 if big or DEVICE == "cuda" else 200
    B, T, H = rng.randint(1, 2), rng.randint(1, top), rng.randint(1, 3)
    K, V = rng.choice([1, 5, 16, 20, 32, 64, 100, 128]), rng.choice([1, 7, 16, 32, 64, 128])
    dtype = rng.choice(kernel_dtypes())
    direction = rng.choice(["causal", "reverse", "bidirectional"])
    mix = rng.choice(["vig", "sharp", "switch"])
    strided = rng.random() < 0.5
    case = dict(seed=seed, B=B, T=T, H=H, K=K, V=V, dtype=dtype, direction=direction, gates=mix, strided=strided)
    proj = torch.randn(B, T, H * (2 * K + V), generator=gen)
    logits = torch.randn(B, T, 2, H, K, generator=gen)
    if mix == "vig":
        gates = F.logsigmoid(logits) / 16
    elif mix == "sharp":
        gates = F.logsigmoid(logits * rng.choice([3.0, 20.0]))
    else:
        cut = rng.randint(0, T)
        gates = torch.cat([F.logsigmoid(logits[:, :cut]) / 16, F.logsigmoid(logits[:, cut:] * 20)], 1)
    grad = torch.randn(B, T, H, V, generator=gen)
    scale = rng.choice([None, 0.1])

    def run(dt):
        p = proj.to(DEVICE, dt).requires_grad_(True)
        g = gates.to(DEVICE, dt).requires_grad_(True)
        q, k, v = p.split([H * K, H * K, H * V], -1)
        q, k, v = q.unflatten(-1, (H, K)), k.unflatten(-1, (H, K)), v.unflatten(-1, (H, V))
        if not strided:
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        rg = g[:, :, 1] if direction == "bidirectional" else None
        if dt == torch.float64:
            y = gated_linear_attention_reference(q, k, v, g[:, :, 0], scale, direction, rg)
        else:
            y = ops.gated_linear_attention(q, k, v, g[:, :, 0], scale, direction, rg)
        return y, torch.autograd.grad(y, (p, g), grad.to(DEVICE, dt))

    y, grads = run(dtype)
    ref, ref_grads = run(torch.float64)
    assert_close(y, ref, dtype, f"out {case}", seed)
    for name, g, r in zip(("dproj (q, k, v)", "dgates"), grads, ref_grads):
        assert_close(g, r, dtype, f"{name} {case}", seed)


def fuzz_bsa(seed: int, big: bool) -> None:
    """The public ``ops.block_sparse_attention`` (or ``ops.radial_attention``) with autograd against
    the fp64 reference: block sizes 16-128, sequences ending anywhere in a block, masks from empty
    rows to full (per batch item or shared, per head or shared), head dims 1-128, q/k/v as slices
    of one projection, either load path of the sequence kernels."""
    from ops.block_sparse import block_sparse_attention_reference
    from ops.common import block_sparse as core

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    # blocks that are no multiple of the streamed block (24, 40, 96) take per-row addressing
    bs = rng.choice([16, 24, 32, 64, 96, 128] if big or DEVICE == "cuda" else [16, 24, 32, 40])
    tma = rng.random() < 0.5            # the sequence path's TMA loads, or its pointer loads
    top = 1500 if big or DEVICE == "cuda" else 200
    B, N, H = rng.randint(1, 2), rng.randint(1, top), rng.randint(1, 3)
    D = rng.choice([1, 8, 16, 24, 32, 64, 100, 128])
    dtype = rng.choice(kernel_dtypes())
    nb = -(-N // bs)
    radial = rng.random() < 0.25 and N >= 2
    strided = rng.random() < 0.5
    if radial:
        frames = rng.choice([f for f in range(1, min(N, 12) + 1) if N % f == 0])
        decay, rule = rng.choice([0.2, 1.0]), rng.choice(["wan", "hunyuan"])
        mask = ops.radial_block_mask(frames, N // frames, bs, decay, rule)[None]
        model = f"radial {frames} frames, decay {decay}, {rule}"
    else:
        density = rng.choice([0.0, 0.1, 0.4, 1.0])
        heads = rng.choice([None, H])                                  # shared by the heads, or per head
        mask = torch.rand(rng.choice([1, B]), *(() if heads is None else (heads,)), nb, nb, generator=gen) < density
        model = f"density {density}" + ("" if heads is None else ", per head")
    case = dict(seed=seed, B=B, N=N, H=H, D=D, block=bs, dtype=dtype, mask=model, strided=strided, tma=tma)
    proj = torch.randn(B, N, 3 * H * D, generator=gen)
    grad = torch.randn(B, N, H, D, generator=gen)
    scale = rng.choice([None, 0.3])

    def run(dt):
        p = proj.to(DEVICE, dt).requires_grad_(True)
        q, k, v = (t.unflatten(-1, (H, D)) for t in p.split(H * D, -1))
        if not strided:
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        m = mask.to(DEVICE)
        if dt == torch.float64:
            y, _ = block_sparse_attention_reference(q, k, v, m, bs, D ** -0.5 if scale is None else scale)
        elif radial:
            y = ops.radial_attention(q, k, v, frames, decay, rule, block_size=bs, scale=scale)
        else:
            y = ops.block_sparse_attention(q, k, v, m if m.shape[0] == B or m.dim() == 4 else m[0], bs, scale)
        return y, torch.autograd.grad(y, p, grad.to(DEVICE, dt))[0]

    before = (core.USE_TMA, core.TMA_MIN_WALK)
    core.USE_TMA, core.TMA_MIN_WALK = tma, 0       # TMA on every walk, however short, when drawn
    try:
        y, g = run(dtype)
    finally:
        core.USE_TMA, core.TMA_MIN_WALK = before
    ref, ref_g = run(torch.float64)
    assert_close(y, ref, dtype, f"out {case}", seed)
    assert_close(g, ref_g, dtype, f"dproj (q, k, v) {case}", seed)


def fuzz_norm_gate(seed: int, big: bool) -> None:
    """The public ``ops.norm_gate_mix`` with autograd against its reference in fp64: leading
    shapes of 1-3 dims, channels 2-300 (and a long row), the three inputs as slices of one
    projection or contiguous, weights in fp32 or the inputs' dtype, gates from mild to saturated."""
    from ops.norm_gate import norm_gate_mix_reference

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    lead = tuple(rng.randint(1, 40 if big or DEVICE == "cuda" else 12) for _ in range(rng.randint(1, 3)))
    # not D = 1: there RMSNorm's gradient, r (1 - n^2) dn, cancels to eps / (x^2 + eps) in fp32 (1e-2
    # relative error in PyTorch's own fp32 autograd as in the kernel)
    D = rng.choice([2, 3, 16, 32, 48, 64, 100, 128, 300, 2500])
    dtype = rng.choice(kernel_dtypes())
    w_dtype = rng.choice([torch.float32, dtype])
    strided = rng.random() < 0.5
    sharp, eps = rng.choice([1.0, 4.0, 30.0]), rng.choice([1e-6, 1e-5, 0.1])
    case = dict(seed=seed, lead=lead, D=D, dtype=dtype, w_dtype=w_dtype, strided=strided, gate_scale=sharp, eps=eps)
    proj = torch.randn(*lead, 3 * D, generator=gen) * torch.tensor([1.0, 3.0, sharp]).repeat_interleave(D)
    weights = 1 + torch.randn(2, D, generator=gen) / 3
    grad = torch.randn(*lead, D, generator=gen)

    def run(dt, wdt):
        p = proj.to(DEVICE, dt).requires_grad_(True)
        w = weights.to(DEVICE, wdt).requires_grad_(True)
        x, y, g = p.split(D, -1)
        if not strided:
            x, y, g = x.contiguous(), y.contiguous(), g.contiguous()
        fn = norm_gate_mix_reference if dt == torch.float64 else ops.norm_gate_mix
        out = fn(x, y, g, w[0], w[1], eps)
        return out, torch.autograd.grad(out, (p, w), grad.to(DEVICE, dt))

    out, grads = run(dtype, w_dtype)
    ref, ref_grads = run(torch.float64, torch.float64)
    assert_close(out, ref, dtype, f"out {case}", seed)
    for name, g, r in zip(("d(x, y, gate)", "dweights"), grads, ref_grads):
        assert_close(g, r, dtype, f"{name} {case}", seed)


FUZZERS = {"na": fuzz_na, "na-op": fuzz_na_op, "bra": fuzz_bra, "lka": fuzz_lka, "gla": fuzz_gla, "bsa": fuzz_bsa,
           "norm-gate": fuzz_norm_gate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("op", choices=sorted(FUZZERS))
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 20), metavar=("FIRST", "COUNT"))
    parser.add_argument("--big", action="store_true", help="larger maps under the interpreter (slower)")
    args = parser.parse_args()
    first, count = args.seeds
    fails, start = 0, time.time()
    for seed in range(first, first + count):
        try:
            FUZZERS[args.op](seed, args.big)
        except AssertionError as exc:
            fails += 1
            print(f"FAIL seed {seed}: {str(exc)[:800]}", flush=True)
        if DEVICE == "cuda" or (seed - first) % 10 == 9 or seed == first + count - 1:
            print(f"{args.op}: {seed - first + 1} seeds, {fails} failed, {time.time() - start:.0f} s", flush=True)
    return fails


if __name__ == "__main__":
    sys.exit(main())
