"""Classification through `foveal fit`: the quickstart learns, DDP on CPU, every config parses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import zoo  # noqa: F401
from tasks.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
MODEL_CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "classification").glob("*.yaml"))
TRAINER_CONFIGS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
# short runs of the quickstart: a few steps, small batches, no warm-up
SHORT = ["--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "3",
         "--model.init_args.warmup_epochs", "0", "--data.init_args.batch_size", "32"]


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["foveal"])   # LightningCLI warns when pytest's argv is present


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())["fit"]["metrics"]


@pytest.mark.slow
def test_quickstart_learns(tmp_path, monkeypatch):
    """A shortened quickstart (2 x 12 steps, van_b0 on digits) is far above chance (0.1)."""
    monkeypatch.chdir(tmp_path)   # the config writes runs/quickstart/... relative to the cwd
    main(["fit", "-c", str(QUICKSTART), *SHORT, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "12",
          "--model.init_args.lr", "3e-3"])
    metrics = _metrics(tmp_path / "runs/quickstart/metrics.json")
    assert metrics["val/acc"] >= 0.4, metrics
    assert 0 < metrics["val/acc"] <= metrics["val/acc_top5"] <= 1 + 1e-6
    assert (tmp_path / "runs/quickstart/checkpoints/last.ckpt").is_file()
    # validate and predict reuse the checkpoint
    ckpt = str(tmp_path / "runs/quickstart/checkpoints/last.ckpt")
    main(["validate", "-c", str(QUICKSTART), "--ckpt_path", ckpt, "--trainer.enable_progress_bar", "false"])
    record = json.loads((tmp_path / "runs/quickstart/metrics.json").read_text())
    assert abs(record["validate"]["metrics"]["val/acc"] - metrics["val/acc"]) < 0.05
    main(["predict", "-c", str(QUICKSTART), "--ckpt_path", ckpt, "--trainer.enable_progress_bar", "false"])
    rows = (tmp_path / "runs/quickstart/predictions.jsonl").read_text().splitlines()
    assert len(rows) == 360 and len(json.loads(rows[0])["top_classes"]) == 5
    # the trained checkpoint exports like an official one and loads back into timm
    from tasks.classification import ImageClassifier
    from tasks.weights import convert

    out = convert(ckpt, "van_b0", tmp_path / "van_b0_digits.safetensors")
    trained = ImageClassifier.load_from_checkpoint(ckpt).model.state_dict()
    loaded = timm.create_model("van_b0", pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(out), num_classes=10)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained.items())


def _fit_subprocess(tmp_path: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "tasks.cli", "fit", "-c", str(QUICKSTART), *SHORT, "--trainer.max_epochs", "1",
           "--trainer.limit_train_batches", "2", "--data.init_args.img_size", "32", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((tmp_path / "runs/quickstart/metrics.json").read_text())["fit"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_gives_the_same_metric_keys(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "ddp").mkdir()
    one = _fit_subprocess(tmp_path / "one")
    ddp = _fit_subprocess(tmp_path / "ddp", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert ddp["devices"] == 2 and ddp["strategy"] == "DDPStrategy" and one["devices"] == 1
    assert set(ddp["metrics"]) == set(one["metrics"]) >= {"val/acc", "val/acc_top5", "val/loss", "train/loss_epoch"}


def _print_config(capsys, *configs: Path) -> dict:
    args = ["fit"] + [a for c in configs for a in ("-c", str(c))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None), f"{configs}: exit {exit_info.value.code}"
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_names_an_existing_model(config, capsys):
    parsed = _print_config(capsys, config)
    name = parsed["model"]["init_args"]["model_name"]
    assert timm.is_model(name), f"{config.name}: model {name!r} is not registered (import zoo)"
    if config.parent.name == "classification":
        assert config.stem == f"{name}_in1k"
        # every official recipe sets stochastic depth, but ViG-T's (its config.py default of 0.0)
        expected_zero = {"vig_tiny"}
        assert (parsed["model"]["init_args"]["drop_path_rate"] > 0) != (name in expected_zero)


@pytest.mark.parametrize("trainer", TRAINER_CONFIGS, ids=lambda p: p.name)
def test_trainer_config_composes(trainer, capsys):
    parsed = _print_config(capsys, MODEL_CONFIGS[-1], trainer)
    expected = yaml.safe_load(trainer.read_text())["trainer"]
    for key in ("accelerator", "devices", "precision", "num_nodes"):
        if key in expected:
            assert parsed["trainer"][key] == expected[key], (trainer.name, key)


def test_recipe_pieces_weight_decay_schedule_ema_mixup():
    """No weight decay on norms/biases/no_weight_decay(); warm-up then cosine per step; EMA + mixup run."""
    from types import SimpleNamespace

    from tasks.classification import ImageClassifier

    module = ImageClassifier("test_vit", num_classes=10, lr=1e-3, weight_decay=0.05, warmup_epochs=1,
                             warmup_lr=1e-6, min_lr=1e-5, cooldown_epochs=1, mixup=0.8, cutmix=1.0, ema_decay=0.9)
    module._trainer = SimpleNamespace(estimated_stepping_batches=40, max_epochs=4)
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names_nwd = module.model.no_weight_decay()
    for name, p in module.model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1 and name not in names_nwd), name
    lrs = []
    for step in range(41):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-6) and max(lrs) == pytest.approx(1e-3, rel=1e-3)
    assert lrs.index(max(lrs)) == 10                                   # warm-up = 1 epoch = 10 steps
    assert all(a >= b for a, b in zip(lrs[10:31], lrs[11:31]))         # cosine decays
    assert lrs[30:] == pytest.approx([1e-5] * 11)                      # cooldown epoch at min_lr
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    mixed, soft = module.mixup_fn(x, y)
    assert soft.shape == (4, 10) and torch.allclose(soft.sum(-1), torch.ones(4))
    before = [p.clone() for p in module.ema.module.parameters()]
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module.ema.update(module.model, step=100)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.ema.module.parameters()))
    assert {"val", "val_top5", "val_ema", "val_ema_top5"} <= set(module.metrics)


def test_compile_runs_the_model_through_torch_compile_in_place():
    """compile=True: dynamo traces the model; the state dict keeps its keys; the EMA copy is eager;
    logits and gradients equal the eager module's."""
    from torch._dynamo.utils import counters

    from tasks.classification import ImageClassifier

    torch.manual_seed(0)
    eager = ImageClassifier("test_resnet", num_classes=10, ema_decay=0.9)
    compiled = ImageClassifier("test_resnet", num_classes=10, ema_decay=0.9, compile=True, compile_backend="aot_eager")
    compiled.load_state_dict(eager.state_dict())
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    counters.clear()
    x = torch.randn(2, 3, 32, 32)
    out_c, out_e = compiled(x), eager(x)
    assert counters["stats"]["unique_graphs"] >= 1
    assert not hasattr(compiled.ema.module, "_compiled_call_impl") or compiled.ema.module._compiled_call_impl is None
    torch.testing.assert_close(out_c, out_e)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    for (name, a), b in zip(compiled.model.named_parameters(), eager.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
