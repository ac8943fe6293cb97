"""Exploration probe (session 2): where the time goes in BRA / BiFormer / LKA, NA box sweep."""
import math, os, time, traceback
import torch, triton
from triton.testing import do_bench
from torch.profiler import profile, ProfilerActivity

OUT = os.environ.get("OUT", "/tmp/out")
LOG = open(os.path.join(OUT, "probe.txt"), "a")
T0 = time.time()
BUDGET = float(os.environ.get("PROBE_BUDGET", "500"))

def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True); LOG.write(s + "\n"); LOG.flush()

def left():
    return BUDGET - (time.time() - T0)

def bench(fn, rep=40):
    return do_bench(fn, warmup=10, rep=rep, return_mode="median")

def wall(fn, n=30):
    fn(); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n * 1e3

def prof(fn, n=3, rows=14):
    fn(); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(n): fn()
        torch.cuda.synchronize()
    evs = [e for e in p.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA or getattr(e, 'self_device_time_total', 0) > 0]
    evs.sort(key=lambda e: -getattr(e, 'self_device_time_total', getattr(e, 'self_cuda_time_total', 0)))
    tot = sum(getattr(e, 'self_device_time_total', 0) for e in evs) / n / 1e3
    lines = [f"   total kernel ms/call {tot:.3f}"]
    for e in evs[:rows]:
        t = getattr(e, 'self_device_time_total', 0) / n / 1e3
        lines.append(f"   {t:8.3f} ms  x{e.count // n:<4d} {e.key[:110]}")
    return "\n".join(lines)

def section(name):
    def deco(fn):
        if left() < 20:
            log(f"== {name}: skipped (budget)"); return fn
        log(f"== {name} (t={time.time()-T0:.0f}s)")
        try:
            fn()
        except Exception:
            log(traceback.format_exc()[-3000:])
        return fn
    return deco

log(torch.__version__, triton.__version__, torch.cuda.get_device_name())
dt = torch.bfloat16

# ---------------------------------------------------------------- BRA
@section("bra breakdown")
def _():
    import ops
    from ops.routing import region_routing, routing_attention_reference
    from ops.common.block_sparse import block_sparse_attention_forward, block_sparse_attention_backward
    for B, S, C, nw, topk in [(64, 56, 64, 7, 1), (64, 28, 128, 7, 4), (64, 14, 256, 7, 16), (8, 128, 64, 8, 4)]:
        H = C // 32; sc = C ** -0.5
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, go = (torch.randn(B, S, S, C, device="cuda", dtype=dt, generator=g) for _ in range(4))
        idx = region_routing(q, k, (nw, nw), topk, sc)
        tile = (S // nw, S // nw)
        log(f"-- B{B} {S} C{C} topk{topk}: routing hist max {torch.bincount(idx.flatten(), minlength=nw*nw).max().item()} of {idx.numel()}")
        f_full = lambda: ops.routing_attention(q, k, v, nw, topk, scale=sc, num_heads=H)
        f_route = lambda: region_routing(q, k, (nw, nw), topk, sc)
        f_fast_route = lambda: (q.view(B, nw, S // nw, nw, S // nw, C).mean((2, 4)).flatten(1, 2) * sc
                                @ k.view(B, nw, S // nw, nw, S // nw, C).mean((2, 4)).flatten(1, 2).transpose(1, 2)).topk(topk, -1).indices
        f_kern = lambda: block_sparse_attention_forward(q, k, v, idx, tile, H, sc)
        out, lse = f_kern()
        f_bwd = lambda: block_sparse_attention_backward(go, q, k, v, out, lse, idx, tile, H, sc)
        f_gather = lambda: routing_attention_reference(q, k, v, region_routing(q, k, (nw, nw), topk, sc), (nw, nw), H, sc)
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
        def f_fb():
            for t in (qg, kg, vg): t.grad = None
            ops.routing_attention(qg, kg, vg, nw, topk, scale=sc, num_heads=H).backward(go)
        for name, f in [("full fwd", f_full), ("routing", f_route), ("routing strided", f_fast_route),
                        ("fwd kernel", f_kern), ("bwd kernels", f_bwd), ("gather fwd", f_gather), ("full fwd+bwd", f_fb)]:
            log(f"   {name:18s} bench {bench(f):.3f} ms  wall {wall(f):.3f} ms")
        log(prof(f_fb))

@section("biformer_tiny train profile")
def _():
    import timm, zoo
    m = timm.create_model("biformer_tiny", use_kernels=True).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device="cuda")
    opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
    def step():
        with torch.autocast("cuda", dtype=dt):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(3): step()
    log(f"   step bench {bench(step, 200):.2f} ms wall {wall(step, 10):.2f} ms")
    log(prof(step, 2, 30))

# ---------------------------------------------------------------- LKA
@section("lka breakdown")
def _():
    import ops
    for B, C, S in [(64, 64, 56), (64, 128, 28), (16, 64, 128)]:
        g = torch.Generator(device="cuda").manual_seed(0)
        r = lambda *s, sc=1.0: torch.randn(*s, device="cuda", dtype=dt, generator=g) * sc
        x = r(B, C, S, S)
        ps = [r(C, 1, 5, 5, sc=0.2), r(C), r(C, 1, 7, 7, sc=0.15), r(C), r(C, C, 1, 1, sc=C ** -0.5), r(C)]
        xc = x.contiguous(memory_format=torch.channels_last)
        for lay, xx in (("nchw", x), ("cl", xc)):
            f = lambda: ops.large_kernel_attention(xx, *ps)
            log(f"-- B{B} C{C} {S} {lay}: fwd {bench(f):.3f} ms")
            log(prof(f, 3, 6))
            xg = xx.clone().requires_grad_(True); pg = [p.clone().requires_grad_(True) for p in ps]
            gg = torch.randn_like(xx)
            fb = lambda: torch.autograd.grad(ops.large_kernel_attention(xg, *pg), [xg, *pg], gg)
            log(f"   fwd+bwd {bench(fb):.3f} ms")
            log(prof(fb, 3, 10))

# ---------------------------------------------------------------- NA box sweep
def axis_union_blocks(L, K, S, causal, bm, bn):
    """sum over query tiles of (#key blocks along this axis), python version of the kernel bounds."""
    def bounds(i):
        first = (i // S) * S
        if causal:
            leader = min(first + S - 1, L - 1); return max(leader - K + 1, 0), i
        leader = min(first + S // 2, L - 1); lo = min(max(leader - K // 2, 0), L - K); return lo, lo + K - 1
    tot = 0
    for t in range(-(-L // bm)):
        lo = bounds(min(t * bm, L - 1))[0]; hi = bounds(min(t * bm + bm - 1, L - 1))[1]
        tot += -(-(hi - lo + 1) // bn)
    return tot

def pow2_boxes(rows, caps):
    out = []
    for a in range(0, 8):
        for b in range(0, 8):
            f0, f1 = 2 ** a, 2 ** b
            if rows % (f0 * f1): continue
            f2 = rows // (f0 * f1)
            if f0 <= caps[0] and f1 <= caps[1] and f2 <= max(caps[2], 1) * 1 and f2 >= 1:
                out.append((f0, f1, f2))
    return out

def candidates(shape3, k3, s3, top=6):
    caps = [triton.next_power_of_2(n) for n in shape3]
    res = []
    for M in (64, 128):
        for N in (64, 128):
            for bm in pow2_boxes(M, caps):
                for bn in pow2_boxes(N, caps):
                    blocks = math.prod(axis_union_blocks(L, K, S, False, m_, n_) for L, K, S, m_, n_ in zip(shape3, k3, s3, bm, bn))
                    pairs = blocks * M * N
                    res.append((pairs, bm, bn))
    res.sort(key=lambda r: (r[0], -r[2][2], -r[1][2]))
    picked = []
    for M in (64, 128):
        for N in (64, 128):
            picked += [r for r in res if math.prod(r[1]) == M and math.prod(r[2]) == N][:2]
    return picked

@section("na box sweep fwd")
def _():
    from ops.neighborhood import kernels as NK
    cases = [("NA-2D large", (1, 24, 128), (96, 96), (17, 17), (1, 1)),
             ("NA-2D backbone", (64, 4, 32), (56, 56), (7, 7), (1, 1)),
             ("GNA-2D", (1, 24, 128), (96, 96), (16, 16), (8, 16)),
             ("NA-3D video", (1, 12, 128), (20, 48, 80), (7, 15, 15), (1, 1, 1)),
             ("GNA-3D", (1, 12, 128), (20, 48, 80), (8, 16, 16), (2, 8, 8))]
    orig = NK._na_fwd_kernel.configs
    for name, (B, H, D), shape, kern, stride in cases:
        if left() < 40: log("budget"); break
        r = len(shape)
        pad = lambda t, f: (f,) * (3 - r) + tuple(t)
        shape3, k3, s3 = pad(shape, 1), pad(kern, 1), pad(stride, 1)
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, *shape, H, D, device="cuda", dtype=dt, generator=g) for _ in range(3))
        sc = D ** -0.5
        needed = B * H * math.prod(shape) * math.prod(kern)
        flops = 4.0 * needed * D
        base = lambda: NK.na_forward(q, k, v, kern, (1,) * r, stride, (False,) * r, sc)
        NK._na_fwd_kernel.configs = orig
        t = bench(base)
        log(f"-- {name}: default {t:.3f} ms {flops / t / 1e9:.0f} TFLOP/s")
        cands = candidates(shape3, k3, s3, top=7)
        for pairs, bm, bn in cands:
            over = pairs * (B * H) / needed
            M = math.prod(bm)
            for w, st in ([(4, 3)] if M == 64 else [(8, 2)]):
                if left() < 30: break
                NK._na_fwd_kernel.configs = [triton.Config({}, num_warps=w, num_stages=st)]
                NK._na_fwd_kernel.cache.clear()
                f = lambda: NK.na_forward(q, k, v, kern, (1,) * r, stride, (False,) * r, sc, boxes=(bm, bn))
                try:
                    t = bench(f)
                    log(f"   bm {bm} bn {bn} w{w} s{st} over {over:.2f}: {t:.3f} ms {flops / t / 1e9:.0f} TFLOP/s")
                except Exception as e:
                    log(f"   bm {bm} bn {bn} w{w} s{st}: {type(e).__name__} {str(e)[:200]}")
    NK._na_fwd_kernel.configs = orig

LOG.close()
