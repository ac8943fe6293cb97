"""``foveal weights list | convert | verify``: official checkpoints -> safetensors, safely.

``convert`` loads a checkpoint with ``torch.load(weights_only=True)`` (pickles that would run
code are refused unless ``--trusted``), unwraps the entry the official code evaluates
(``state_dict`` / ``model``; ``--ema`` for ``model_ema`` / ``state_dict_ema``; Lightning
checkpoints from ``foveal fit`` too), applies the model's ``checkpoint_filter_fn``, checks the
result loads into ``timm.create_model(NAME)`` strictly, and writes ``DST.safetensors`` (the
pretrained cfg in its metadata) plus ``DST.json`` (cfg + sha256). Load it offline with
``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=DST))`` (add
``num_classes=N`` to the overlay when the file's head is not the cfg's width, e.g. 10 for digits).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch

MANIFEST = Path(__file__).resolve().parents[1] / "weights" / "manifest.yaml"
_PREFIXES = ("module.", "_orig_mod.")


def load_manifest(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Entries of ``weights/manifest.yaml`` (one per official checkpoint)."""
    import yaml

    path = Path(path) if path else MANIFEST
    if not path.is_file():
        from importlib.resources import files

        path = Path(str(files("weights") / "manifest.yaml"))
    return yaml.safe_load(path.read_text())


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, with a progress bar for large files."""
    from tqdm import tqdm

    path, digest = Path(path), hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                    disable=size < (64 << 20), file=sys.stderr) as bar:
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def load_checkpoint(path: str | Path, trusted: bool = False) -> dict[str, Any]:
    """Read a .safetensors / .pth / .ckpt file without executing code (unless ``trusted``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if trusted:
        return torch.load(path, map_location="cpu", weights_only=False)
    import pickle

    # argparse.Namespace: the `args` entry of DeiT-style training checkpoints (BiFormer, ViG)
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path}: refusing to unpickle objects that are not plain tensors/containers "
                f"(torch.load weights_only=True failed: {str(err).splitlines()[0]}). If you trust the "
                "file's source, pass --trusted (weights_only=False can execute arbitrary code).") from None


def unwrap_state_dict(checkpoint: dict[str, Any], key: str | None = None, ema: bool = False) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint.

    ``key`` names the entry; else a Lightning checkpoint gives ``state_dict`` minus ``model.``
    (``ema.module.`` with ``ema``), and an official one ``state_dict`` > ``model`` (what the
    official evaluation code reads) or ``state_dict_ema`` > ``model_ema`` with ``ema``."""
    if "pytorch-lightning_version" in checkpoint:
        prefix = "ema.module." if ema else "model."
        sd = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        if not sd:
            raise ValueError(f"checkpoint: no '{prefix}*' weights in this Lightning checkpoint"
                             + (" (trained without ema_decay?)" if ema else ""))
    else:
        order = [key] if key else (["state_dict_ema", "model_ema"] if ema else ["state_dict", "model"])
        sd = checkpoint
        for name in order:
            if isinstance(checkpoint.get(name), dict):
                sd = checkpoint[name]
                break
        else:
            if key or ema:
                raise ValueError(f"checkpoint: none of {order} found; top-level keys: {sorted(checkpoint)[:10]}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"checkpoint: entry {k!r} is {type(v).__name__}, not a tensor; pass --key to pick the state dict")
        for prefix in _PREFIXES:
            k = k[len(prefix):] if k.startswith(prefix) else k
        out[k] = v
    return out


def file_overlay(path: str | Path) -> dict[str, Any]:
    """``pretrained_cfg_overlay`` that loads a local weights file through timm: the file, and the
    class count that `convert` recorded in its ``.json`` sidecar (timm keeps the file's classifier
    only when the cfg's ``num_classes`` matches the file's)."""
    overlay: dict[str, Any] = dict(file=str(path))
    sidecar = Path(path).with_suffix(".json")
    if sidecar.is_file():
        overlay["num_classes"] = json.loads(sidecar.read_text())["num_classes"]
    return overlay


def _filter_fn(model_name: str, converter: str | None) -> Callable | None:
    import timm

    if converter:
        module, _, fn = converter.partition(":")
        return getattr(importlib.import_module(module), fn or "checkpoint_filter_fn")
    module = sys.modules[timm.models.model_entrypoint(model_name).__module__]
    return getattr(module, "checkpoint_filter_fn", None)


def _classifier_width(model, sd: dict[str, torch.Tensor]) -> int | None:
    head = model.pretrained_cfg.get("classifier")
    weight = sd.get(f"{head}.weight") if isinstance(head, str) else None
    return None if weight is None else int(weight.shape[0])


def convert(src: str | Path, model_name: str, out: str | Path, *, key: str | None = None, ema: bool = False,
            trusted: bool = False, converter: str | None = None, num_classes: int | None = None) -> Path:
    """Convert ``src`` for ``model_name`` into ``out`` (.safetensors) + ``out.json``; returns ``out``."""
    import timm
    from safetensors.torch import save_file

    import zoo  # noqa: F401

    if not timm.is_model(model_name):
        raise ValueError(f"--model: {model_name!r} is not a timm/zoo model name")
    entry = next((e for e in load_manifest() if e["model"] == model_name), {})
    converter = converter or entry.get("converter")
    checkpoint = load_checkpoint(src, trusted=trusted)
    sd = unwrap_state_dict(checkpoint, key=key, ema=ema)
    model = timm.create_model(model_name, pretrained=False)
    filter_fn = _filter_fn(model_name, converter)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    width = num_classes or _classifier_width(model, sd)
    if width is not None and width != model.num_classes:
        model = timm.create_model(model_name, pretrained=False, num_classes=width)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{src}: does not match {model_name} after conversion: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}")
    cfg = {k: v for k, v in model.pretrained_cfg.items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}
    cfg["num_classes"] = model.num_classes
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(out), metadata={"format": "pt", "architecture": model_name,
                                           "pretrained_cfg": json.dumps(cfg)})
    sidecar = {"architecture": model_name, "num_classes": model.num_classes, "pretrained_cfg": cfg,
               "sha256": sha256sum(out), "source": {"file": Path(src).name, "sha256": sha256sum(src)}}
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


def verify(path: str | Path, expected: str | None = None) -> tuple[bool | None, str, str]:
    """(ok, actual sha256, where the expected hash came from); ok None when nothing is known."""
    path = Path(path)
    actual = sha256sum(path)
    source = "--sha256"
    if expected is None and path.with_suffix(".json").is_file():
        expected, source = json.loads(path.with_suffix(".json").read_text()).get("sha256"), str(path.with_suffix(".json"))
    if expected is None:
        entry = next((e for e in load_manifest() if e.get("file") == path.name), None)
        if entry is not None:
            expected, source = entry.get("sha256"), f"manifest ({entry['model']})"
    if expected is None:
        return None, actual, "no known sha256"
    return actual == expected.lower(), actual, source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="foveal weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the official checkpoints in the manifest")
    p = sub.add_parser("convert", help="official/Lightning checkpoint -> safetensors + pretrained cfg")
    p.add_argument("src")
    p.add_argument("--model", required=True, help="timm/zoo model name, e.g. van_b0")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--key", help="checkpoint entry holding the state dict (default: what the official code reads)")
    p.add_argument("--ema", action="store_true", help="take the EMA weights (model_ema / state_dict_ema / Lightning ema)")
    p.add_argument("--converter", help="module:function to apply instead of the model's checkpoint_filter_fn")
    p.add_argument("--num-classes", type=int, help="classifier width (default: read from the checkpoint)")
    p.add_argument("--trusted", action="store_true",
                   help="allow arbitrary pickles (torch.load weights_only=False): only for files you trust")
    p = sub.add_parser("verify", help="check a file's sha256 (against --sha256, its .json sidecar or the manifest)")
    p.add_argument("file")
    p.add_argument("--sha256")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(f"{'model':<20} {'metric':>12}  {'license':<11} {'sha256':<12} file / url")
        for e in load_manifest():
            m = e.get("metric") or {}
            metric = f"top-1 {m['top1']}" if "top1" in m else f"mIoU {m['miou']}" if "miou" in m else ""
            print(f"{e['model']:<20} {metric:>12}  {e.get('license', ''):<11} {(e.get('sha256') or 'unknown')[:12]:<12} "
                  f"{e['file']}  {e['url']}")
    elif args.command == "convert":
        try:
            out = convert(args.src, args.model, args.out, key=args.key, ema=args.ema, trusted=args.trusted,
                          converter=args.converter, num_classes=args.num_classes)
        except (ValueError, OSError) as err:   # OSError: a missing or unreadable file
            raise SystemExit(f"foveal weights convert: {err}")
        width = json.loads(out.with_suffix(".json").read_text())["num_classes"]
        print(f"wrote {out} and {out.with_suffix('.json')}\n"
              f"load: timm.create_model({args.model!r}, pretrained=True, "
              f"pretrained_cfg_overlay=dict(file={str(out)!r}, num_classes={width}))")
    else:
        try:
            ok, actual, source = verify(args.file, args.sha256)
        except OSError as err:
            raise SystemExit(f"foveal weights verify: {err}")
        print(f"{args.file}: sha256 {actual} ({source})")
        if ok is False:
            raise SystemExit(f"foveal weights verify: MISMATCH for {args.file}")
        print("OK" if ok else "no reference hash to compare against")


if __name__ == "__main__":
    main()
