"""The benchmark runner behind ``foveal bench``: time named cases, print a table, write JSON.

A suite is a function ``(device, dtype, **options) -> list[Case]`` registered with
``@register_suite``; ``options`` are the CLI's suite options (``model``, ``batch_size``,
``img_size``), ``None`` where not given, for the suite to default.
Each case holds one or more implementations (foveal and its peers) as zero-argument callables
built on already-allocated inputs. On CUDA a call is timed with ``triton.testing.do_bench``
(median, after warm-up), and its rows also record ``cpu_ms``, the host's time to issue one call
(a row close to it is bound by the host, not the GPU); on CPU with a wall-clock median.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

SUITES: dict[str, Callable[[str, torch.dtype], list["Case"]]] = {}


@dataclass
class Case:
    """One benchmark problem with the implementations to compare on it.

    ``impls`` maps a name ("foveal", "sdpa-cudnn", ...) to a zero-argument callable; one that
    cannot run here is given as a string saying why. ``flops`` / ``bytes`` are the work the
    problem needs (not what an implementation happens to do), for TFLOP/s and GB/s; ``items``
    the images per call, for images/s. On CUDA every row also gets the call's peak memory.
    """
    name: str
    shapes: dict
    impls: dict[str, Callable[[], object] | str]
    flops: float = 0.0
    bytes: float = 0.0
    items: float = 0.0  # images (or samples) per call, for throughput
    notes: dict = field(default_factory=dict)
    # Sparse ops: the dense implementation that sets the FLOP bound, and that bound
    # (dense FLOPs / sparse FLOPs). Each row then gets fraction_of_bound =
    # (dense time / row time) / flop_bound_x: 1.0 means the sparsity is fully turned into speed.
    dense_impl: str | None = None
    flop_bound_x: float | None = None


def register_suite(name: str):
    def deco(fn):
        SUITES[name] = fn
        return fn
    return deco


def _time_ms(fn: Callable[[], object], device: str, warmup_ms: float, rep_ms: float) -> float:
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()  # warm-up (allocations, first-call dispatch)
    times, start_all = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start_all) * 1e3 < rep_ms and len(times) < 50:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _issue_ms(fn: Callable[[], object], calls: int = 10) -> float:
    """Median CPU time (ms) to issue one call on CUDA: each call starts with the device idle and is
    not waited for, so this is the host's part alone. An eager row whose time is close to it is
    bound by the host's CPU, not by the GPU (``do_bench`` then times the CPU)."""
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def _memory(fn: Callable[[], object]) -> dict:
    """Peak device memory of one call, and the part of it above what was allocated before
    (the workspace an implementation needs beyond its inputs), in GiB."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del result
    return {"peak_mem_gib": peak / 2**30, "extra_mem_gib": (peak - before) / 2**30}


def _git_commit() -> str | None:
    if os.environ.get("FOVEAL_GIT_COMMIT"):  # set when the tree was copied without .git (remote GPU runs)
        return os.environ["FOVEAL_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def host_speed_us(device: str, calls: int = 1000) -> float:
    """CPU time per call of a trivial autograd step, ``(x * 1.0).sum().backward()`` on ``device``,
    in microseconds: the host's speed. Eager rows of calls whose GPU work takes 0.1-0.3 ms are
    bound by the host, whose speed differs between the machines of a pool and within minutes
    (101-182 us on the H200 hosts), so every run records it at its start and end."""
    x = torch.randn(64, device=device, requires_grad=True)

    def step():
        (x * 1.0).sum().backward()

    for _ in range(100):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def environment(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(), "command": "foveal bench " + " ".join(sys.argv[2:])}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    info["device_name"] = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    return info


def run_suite(name: str, device: str, dtype: torch.dtype, warmup_ms: float = 25, rep_ms: float = 100,
              only: list[str] | None = None, on_row: Callable[[dict], None] | None = None,
              **options) -> dict:
    """Run every case of suite ``name``; return the JSON-ready record.

    ``on_row`` gets the partial record after every timed row (``complete`` is False until the
    end), so a run cut short by a time limit still leaves its measurements behind.
    """
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {sorted(SUITES)}")
    cases = SUITES[name](device, dtype, **options)
    rows: list[dict] = []
    record = {"suite": name, "environment": environment(device), "complete": False, "results": rows}
    record["environment"]["host_us_start"] = host_speed_us(device)
    for case in tqdm(cases, desc=f"bench {name}", unit="case", leave=False, disable=None):
        for impl, fn in case.impls.items():
            if only and impl not in only and impl != "foveal":
                continue
            row = {"case": case.name, "impl": impl, "shapes": case.shapes, "dtype": str(dtype).removeprefix("torch."),
                   **case.notes}
            if isinstance(fn, str):
                row.update(median_ms=None, skipped=fn)
            else:
                try:
                    ms = _time_ms(fn, device, warmup_ms, rep_ms)
                except Exception as exc:  # a peer that fails here is reported, not fatal
                    row.update(median_ms=None, skipped=f"{type(exc).__name__}: {exc}"[:300])
                else:
                    row["median_ms"] = ms
                    if case.flops:
                        row["tflops"] = case.flops / (ms * 1e-3) / 1e12
                    if case.bytes:
                        row["gbps"] = case.bytes / (ms * 1e-3) / 1e9
                    if case.items:
                        row["items_per_s"] = case.items / (ms * 1e-3)
                    if device == "cuda":
                        row["cpu_ms"] = _issue_ms(fn)
                        row.update(_memory(fn))
            rows.append(row)
            if on_row is not None:
                on_row(record)
            if device == "cuda":
                torch.cuda.empty_cache()
        _add_fraction_of_bound(case, [r for r in rows if r["case"] == case.name])
    record["environment"]["host_us_end"] = host_speed_us(device)
    record["complete"] = True
    return record


def _add_fraction_of_bound(case: Case, rows: list[dict]) -> None:
    dense = next((r.get("median_ms") for r in rows if r["impl"] == case.dense_impl), None)
    if not (dense and case.flop_bound_x):
        return
    for r in rows:
        if r.get("median_ms"):
            r["fraction_of_bound"] = dense / r["median_ms"] / case.flop_bound_x


def format_table(record: dict) -> str:
    header = (f"{'case':<34} {'impl':<22} {'ms':>9} {'CPU ms':>8} {'TFLOP/s':>9} {'GB/s':>9} {'img/s':>9} "
              f"{'peak GiB':>8} {'bound':>6}  foveal speedup")
    lines = [header, "-" * len(header)]
    foveal_ms = {r["case"]: r["median_ms"] for r in record["results"] if r["impl"] == "foveal"}
    for r in record["results"]:
        ms = r.get("median_ms")
        if ms is None:
            lines.append(f"{r['case']:<34} {r['impl']:<22} {'-':>9}  skipped: {r['skipped'][:60]}")
            continue
        ref = foveal_ms.get(r["case"])
        ratio = f"{ms / ref:6.2f}x" if ref and r["impl"] != "foveal" else ""
        tf = f"{r['tflops']:9.3g}" if "tflops" in r else f"{'':>9}"
        gb = f"{r['gbps']:9.3g}" if "gbps" in r else f"{'':>9}"
        ips = f"{r['items_per_s']:9.0f}" if "items_per_s" in r else f"{'':>9}"
        mem = f"{r['peak_mem_gib']:8.2f}" if "peak_mem_gib" in r else f"{'':>8}"
        frac = f"{r['fraction_of_bound']:6.0%}" if "fraction_of_bound" in r else f"{'':>6}"
        cpu = f"{r['cpu_ms']:8.4f}" if r.get("cpu_ms") is not None else f"{'':>8}"
        lines.append(f"{r['case']:<34} {r['impl']:<22} {ms:9.4f} {cpu} {tf} {gb} {ips} {mem} {frac}  {ratio}")
    env = record["environment"]
    host = ""
    if "host_us_start" in env:   # records of earlier versions lack it
        end = f" -> {env['host_us_end']:.0f}" if "host_us_end" in env else ""
        host = f" | host: trivial backward {env['host_us_start']:.0f}{end} us"
    lines.append(f"[{env['device_name']} | torch {env['torch']} | triton {env['triton']} | {env['date']}{host}]")
    if any(r.get("cpu_ms") is not None for r in record["results"]):
        lines.append("CPU ms: the host's time to issue one call from an idle GPU; a row whose ms is close to it "
                     "is bound by the host's CPU, not by the GPU.")
    return "\n".join(lines)


def write_json(record: dict, out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = record["environment"]
    tag = "cpu" if env["device"] == "cpu" else env["device_name"].replace(" ", "-").lower()
    path = out_dir / f"{record['suite']}-{tag}-{env['date'][:10]}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
