"""The ``foveal`` command: LightningCLI's fit/validate/test/predict plus ``bench``."""
from __future__ import annotations

import sys

COMMANDS = {
    "fit": "train a model (LightningCLI): foveal fit -c configs/<task>/<model>_<data>.yaml",
    "validate": "evaluate on the validation set (LightningCLI)",
    "test": "evaluate on the test set (LightningCLI)",
    "predict": "run inference (LightningCLI)",
    "bench": "time ops/models against their peers; prints a table and writes JSON",
    "weights": "official checkpoints: list | convert SRC --model NAME --out DST.safetensors | verify FILE",
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<9} {text}" for name, text in COMMANDS.items())
    return ("usage: foveal <command> [options]\n\nfoveal: sparse and linear attention model zoo.\n\n"
            f"commands:\n{rows}\n\nRun 'foveal <command> --help' for the options of one command.")


def lightning_cli(args: list[str] | None = None):
    """LightningCLI over any LightningModule/DataModule named by ``class_path`` in the config."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    import zoo  # noqa: F401  (registers the zoo models with timm)

    return LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
                        subclass_mode_data=True, args=args, parser_kwargs={"default_env": True})


def main(argv: list[str] | None = None) -> None:
    from_sys = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from .bench import main as bench_main

        bench_main(rest)
    elif command == "weights":
        from .weights import main as weights_main

        weights_main(rest)
    elif command in ("fit", "validate", "test", "predict"):
        lightning_cli(None if from_sys else argv)   # LightningCLI reads sys.argv itself
    else:
        print(_usage(), file=sys.stderr)
        raise SystemExit(f"foveal: unknown command {command!r}")


if __name__ == "__main__":
    main()
