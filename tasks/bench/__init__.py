"""``foveal bench <suite>``: op and model benchmarks against their peers, as a table and JSON."""
from __future__ import annotations

import argparse

import torch

from .runner import SUITES, Case, format_table, register_suite, run_suite, write_json
from . import suites  # noqa: F401  (registers the suites)

__all__ = ["Case", "SUITES", "main", "register_suite", "run_suite"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _img_size(text: str) -> tuple[int, int]:
    """``224`` -> (224, 224); ``1024x2048`` -> (1024, 2048) (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH in pixels (got {text!r})")
    return parts[0], parts[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="foveal bench", description="Benchmark ops and models against their peers.")
    parser.add_argument("suite", nargs="+", help=f"suites to run: {', '.join(sorted(SUITES))} (or 'all')")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="default bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON records")
    parser.add_argument("--warmup-ms", type=float, default=25.0)
    parser.add_argument("--rep-ms", type=float, default=100.0)
    parser.add_argument("--only", nargs="*", default=None, help="peers to keep (foveal always runs)")
    parser.add_argument("--no-json", action="store_true", help="print the table only")
    parser.add_argument("--model", nargs="*", default=None, help="model names or globs (models suite)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (models suite)")
    parser.add_argument("--img-size", type=_img_size, default=None,
                        help="input resolution, SIZE or HEIGHTxWIDTH (models suite; e.g. 1024x2048 for BEVANet)")
    parser.add_argument("--modes", nargs="+", default=None, choices=["infer", "train"],
                        help="what to time (models suite; default both)")
    parser.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile every model with this mode (models suite)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend for --compile (models suite)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype or ("bf16" if device == "cuda" else "fp32")]
    names = sorted(SUITES) if args.suite == ["all"] else args.suite
    for name in names:
        if name not in SUITES:
            parser.error(f"unknown suite {name!r}; choose from {', '.join(sorted(SUITES))}")
    if "models" in names and args.model:
        from .suites.models import _expand
        try:
            _expand(args.model)
        except ValueError as err:   # a --model name no registry knows: one line before anything runs
            parser.error(str(err))
    for name in names:
        partial = None if args.no_json else (lambda rec: write_json(rec, args.out))
        record = run_suite(name, device, dtype, args.warmup_ms, args.rep_ms, args.only, on_row=partial,
                           model=args.model, batch_size=args.batch_size, img_size=args.img_size, modes=args.modes,
                           compile=args.compile, compile_backend=args.compile_backend)
        print(format_table(record))
        if not args.no_json:
            print(f"wrote {write_json(record, args.out)}")
