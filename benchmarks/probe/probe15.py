"""Probe (session 7): GPU time of the NA kernels on the bench's NA cases (``tasks/bench/suites/na.py``)
under kernel versions and explicit launch configurations.

    python benchmarks/probe/probe15.py variants NAME=FILE [NAME=FILE ...]   # forward, per kernel version
    python benchmarks/probe/probe15.py sweep                                # tile / warps / stages sweep
    PROBE_CASES=0,2 PROBE_KINDS=fwd python benchmarks/probe/probe15.py sweep  # a subset
    PROBE_SUITE=na1d PROBE_KINDS=dq,dkv python benchmarks/probe/probe15.py sweep  # the na1d bench's cases
    PROBE_BWD_STAGES=1,2,3 ...                                                     # dQ / dK/dV stages

``variants``: each FILE is a version of ``ops/neighborhood/kernels.py`` (e.g. an older commit's,
from ``git show``), imported side by side as ``ops.neighborhood._probe_NAME``; ``NAME=FILE:nomask``
drops the window mask (wrong results: the mask's cost), ``NAME=FILE:fixedkv`` reloads the first
key block on every step (the walk's memory cost). Each version's forward runs its own autotuner.
``sweep``: the current kernels with the (query box, key box) of each row-count pair from the
cost model (``tiling.choose_boxes``; dK/dV rows costed as their own walk), at fixed warps and stages; the backward's dQ and dK/dV
kernels are timed apart (dQ alone; dK/dV after a fixed dQ launch, which writes the delta it reads).

Every configuration is first compiled in parallel worker processes (Triton's disk cache), then
timed serially in one process (``triton.testing.do_bench``, median); each output is compared with
the first version's / the default configuration's (max abs error, bf16).
"""
from __future__ import annotations

import importlib
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor

import torch
from triton.testing import do_bench

from tasks.bench.suites import na1d
from tasks.bench.suites.na import GPU_CASES

if os.environ.get("PROBE_SUITE") == "na1d":   # the 1-D bench's cases, in the 2-D/3-D cases' format
    GPU_CASES = [(f"na1d L{n} k{k}", (b, h, d), (n,), (k,), (1,), None) for b, n, h, d, k in na1d.GPU_CASES]

PKG = os.path.join(os.path.dirname(__file__), "..", "..", "ops", "neighborhood")
PATCHES = {
    "nomask": ("_fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, MASK > 0, PRECISION)",
               "_fwd_block(acc, m_i, l_i, q, kt, v, mask, qk_scale, False, PRECISION)"),
    "fixedkv": ("for it in range(0, n_blocks):\n        j0, j1, j2, kv_ok = _walk_block(it,",
                "for it in range(0, n_blocks):\n        j0, j1, j2, kv_ok = _walk_block(0,"),
}
FWD_ROWS = [(64, 64), (64, 32), (64, 128), (128, 64), (128, 128)]
DQ_ROWS = [(64, 64), (64, 32), (128, 64), (128, 128)]
DKV_ROWS = [(32, 64, 4), (16, 64, 4), (64, 64, 4), (64, 64, 8), (32, 128, 8), (64, 128, 8)]   # (queries, keys, warps)


def write_variant(spec: str) -> None:
    """Write version ``NAME=FILE[:patch]`` into the package as ``_probe_NAME.py`` (before any
    worker starts: workers only import)."""
    name, _, path = spec.partition("=")
    path, _, patch = path.partition(":")
    src = open(path).read()
    if patch:
        old, new = PATCHES[patch]
        assert old in src, f"{patch}: pattern not found in {path}"
        src = src.replace(old, new)
    with open(os.path.join(PKG, f"_probe_{name}.py"), "w") as f:
        f.write(src)


def load_variant(spec: str):
    name = spec.partition("=")[0]
    return name, importlib.import_module(f"ops.neighborhood._probe_{name}")


def inputs(case):
    name, (b, h, d), shape, kernel, stride, _ = case
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, g = (torch.randn(b, *shape, h, d, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
    rank = len(shape)
    args = (kernel, (1,) * rank, stride, (False,) * rank, d ** -0.5)
    return q, k, v, g, args


class Fixed:
    """A launcher stand-in: the jit kernel at fixed warps / stages (``None``: launch nothing)."""

    def __init__(self, kernel, warps: int | None, stages: int = 2):
        self.fn, self.warps, self.stages = kernel.fn, warps, stages

    def __getitem__(self, grid):
        if self.warps is None:
            return lambda *a, **k: None
        return lambda *a, **k: self.fn[grid](*a, **k, num_warps=self.warps, num_stages=self.stages)

    def launch(self, site, grid, args, meta):
        """``Launcher.launch``'s signature (the kernels' callers key their launches by site)."""
        self[grid](*args, **meta)


def boxes(case, rows, by_keys=False):
    """The cost model's (query box, key box) for ``rows`` and its walk / needed products;
    ``by_keys`` costs the dK/dV walk."""
    from ops.neighborhood.kernels import _pad_params
    from ops.neighborhood.tiling import choose_boxes
    _, _, shape, kernel, stride, _ = case
    rank = len(shape)
    bm, bn, cost = choose_boxes(_pad_params(rank, shape, 1), _pad_params(rank, kernel, 1),
                                _pad_params(rank, stride, 1), (False,) * 3, *rows, by_keys)
    return bm, bn, cost / (math.prod(shape) * math.prod(kernel))


def _selected(var: str, default):
    """Cases / kinds picked by an environment variable (comma-separated), e.g. PROBE_CASES=0,2."""
    value = os.environ.get(var)
    return default if not value else [type(default[0])(x) for x in value.split(",")]


def sweep_jobs():
    jobs = []
    cases = _selected("PROBE_CASES", list(range(len(GPU_CASES))))
    kinds = _selected("PROBE_KINDS", ["fwd", "dq", "dkv"])
    bwd_stages = _selected("PROBE_BWD_STAGES", [1, 2])
    for ci in cases:
        for rows in FWD_ROWS if "fwd" in kinds else []:
            for st in (2, 3):
                jobs.append(("fwd", ci, rows, 4 if rows[0] == 64 else 8, st))
        for rows in DQ_ROWS if "dq" in kinds else []:
            for st in bwd_stages:
                jobs.append(("dq", ci, rows, 4 if rows[0] == 64 else 8, st))
        for qm, kn, w in DKV_ROWS if "dkv" in kinds else []:
            for st in bwd_stages:
                jobs.append(("dkv", ci, (qm, kn), w, st))
    return jobs


def run_sweep_job(job, reference=None, time_it=False):
    import ops.neighborhood.kernels as K
    kind, ci, rows, warps, stages = job
    case = GPU_CASES[ci]
    q, k, v, g, args = inputs(case)
    saved = K._na_fwd, K._na_bwd_dq, K._na_bwd_dkv, K._plan
    try:
        if kind == "fwd":
            K._na_fwd = Fixed(K._na_fwd_kernel, warps, stages)
            bm, bn, ratio = boxes(case, rows)
            fn = lambda: K.na_forward(q, k, v, *args, boxes=(bm, bn))  # noqa: E731
        else:
            out, lse = K.na_forward(q, k, v, *args)
            bm, bn, ratio = boxes(case, rows, by_keys=kind == "dkv")
            plan = saved[3]

            def patched(*a, **kw):
                shape, dil, glen, pbm, pbn = plan(*a, **kw)
                return (shape, dil, glen, bm, bn) if a[-1] == kind else (shape, dil, glen, pbm, pbn)
            K._plan = patched
            K._bwd_launch.cache_clear()   # launch plans are cached per problem: rebuild them from the patched plan
            # dQ alone (dK/dV off), or dK/dV after a fixed dQ launch (it writes the delta dK/dV reads)
            K._na_bwd_dq = Fixed(K._na_bwd_dq_kernel, *((warps, stages) if kind == "dq" else (4, 1)))
            K._na_bwd_dkv = Fixed(K._na_bwd_dkv_kernel, warps if kind == "dkv" else None, stages)
            grads = tuple(torch.full_like(t, float("nan")) for t in (q, k, v))
            fn = lambda: K.na_backward(g, None, q, k, v, out, lse, *args, grads=grads)  # noqa: E731
        res = fn()
        torch.cuda.synchronize()
        if not time_it:
            return None
        t = do_bench(fn, warmup=10, rep=60, return_mode="median")
        res = res[0] if kind in ("fwd", "dq") else torch.cat([res[1].flatten(), res[2].flatten()])
        return t, bm, bn, ratio, res.float()
    finally:
        K._na_fwd, K._na_bwd_dq, K._na_bwd_dkv, K._plan = saved
        K._bwd_launch.cache_clear()


def variant_jobs(specs):
    return [(spec, ci) for spec in specs for ci in range(len(GPU_CASES))]


def run_variant_job(spec, ci, time_it=False):
    _, mod = load_variant(spec)
    q, k, v, g, args = inputs(GPU_CASES[ci])
    fn = lambda: mod.na_forward(q, k, v, *args)  # noqa: E731
    out = fn()[0]
    torch.cuda.synchronize()
    if not time_it:
        return None
    return do_bench(fn, warmup=10, rep=60, return_mode="median"), out.float()


def _compile(payload):
    mode, job = payload
    try:
        if mode == "sweep":
            run_sweep_job(job)
        else:
            run_variant_job(*job)
        return None
    except Exception as e:  # report, do not stop the pool
        return f"{job}: {type(e).__name__}: {str(e)[:200]}"


def precompile(mode, jobs, workers=12):
    import multiprocessing as mp
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        for err in ex.map(_compile, [(mode, j) for j in jobs]):
            if err:
                print("compile error:", err, flush=True)


def main():
    mode = sys.argv[1]
    torch.backends.cuda.matmul.allow_tf32 = True
    if mode == "variants":
        specs = sys.argv[2:]
        for spec in specs:
            write_variant(spec)
        precompile("variants", variant_jobs(specs))
        for ci, case in enumerate(GPU_CASES):
            ref = None
            row = []
            for spec in specs:
                t, out = run_variant_job(spec, ci, time_it=True)
                err = 0.0 if ref is None else (out - ref).abs().max().item()
                ref = out if ref is None else ref
                row.append(f"{spec.partition('=')[0]} {t * 1e3:8.1f} us (err {err:.1e})")
            print(f"{case[0]:15s} | " + " | ".join(row), flush=True)
    else:
        jobs = sweep_jobs()
        precompile("sweep", jobs)
        refs = {}
        for job in jobs:
            kind, ci, rows, warps, stages = job
            try:
                t, bm, bn, ratio, res = run_sweep_job(job, time_it=True)
            except Exception as e:
                print(f"{GPU_CASES[ci][0]:15s} {kind:3s} {rows} w{warps} s{stages}: {type(e).__name__} {str(e)[:120]}")
                continue
            ref = refs.setdefault((kind, ci), res)
            err = (res - ref).abs().max().item()
            print(f"{GPU_CASES[ci][0]:15s} {kind:3s} rows {rows} w{warps} s{stages} q{bm} k{bn} walk {ratio:.2f}: "
                  f"{t * 1e3:8.1f} us (err {err:.1e})", flush=True)
    for f in os.listdir(PKG):
        if f.startswith("_probe_"):
            os.remove(os.path.join(PKG, f))
    shutil.rmtree(os.path.join(PKG, "__pycache__"), ignore_errors=True)


if __name__ == "__main__":
    main()
