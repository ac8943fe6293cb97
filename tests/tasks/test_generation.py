"""Generation eval (tasks.generation): a tiny offline WanPipeline, dense vs sparsified, through a
Lightning Trainer and through ``foveal test``; the Wan recipe parses."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("diffusers")

from lightning.pytorch import Callback, Trainer  # noqa: E402

from tasks.cli import main  # noqa: E402
from tasks.generation import PromptDataModule, SparseGenerationEval  # noqa: E402
from zoo.diffusion import is_sparsified  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WAN_CONFIG = ROOT / "configs" / "generation" / "wan_1.3b_neighborhood.yaml"
# 9 frames of 32x48 -> latent (3, 4, 6) -> token grid (3, 2, 3) after the (1, 2, 2) patchify
GEN = dict(height=32, width=48, num_frames=9, num_inference_steps=2, guidance_scale=5.0)
FULL = (3, 2, 3)      # a window covering the whole token grid: neighborhood attention == dense


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")   # the PyTorch reference: no Triton interpreter
    monkeypatch.setattr(sys, "argv", ["foveal"])


def tiny_wan_pipeline():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer.eval(), vae=vae.eval(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))


@pytest.fixture(scope="module")
def pipe():
    return tiny_wan_pipeline()


@pytest.fixture
def embeds_file(tmp_path):
    g = torch.Generator().manual_seed(3)
    path = tmp_path / "embeds.pt"
    torch.save({"prompt_embeds": torch.randn(2, 4, 32, generator=g),
                "negative_prompt_embeds": torch.randn(1, 4, 32, generator=g),
                "prompts": ["first", "second"]}, path)
    return path


class Keep(Callback):
    """Keeps test_step's outputs (dense and sparse frames) per batch."""

    def __init__(self):
        self.outputs = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        assert not is_sparsified(pl_module.pipe)        # unsparsified right after the sparse run
        self.outputs.append({k: v.clone() for k, v in outputs.items()})


def evaluate(module, embeds_file, batch_size=1):
    keep = Keep()
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[keep])
    metrics = trainer.test(module, datamodule=PromptDataModule(embeds_file=str(embeds_file), batch_size=batch_size),
                           verbose=False)[0]
    return metrics, keep.outputs


def test_whole_grid_window_equals_dense(pipe, embeds_file, tmp_path):
    """A window covering the whole token grid is dense attention: PSNR > 60 dB (or inf), SSIM ~ 1;
    every metric is logged; the saved outputs and results.jsonl are there."""
    module = SparseGenerationEval(pipeline=pipe, kernel_size=list(FULL), output_dir=str(tmp_path / "out"),
                                  save="png", **GEN)
    metrics, outputs = evaluate(module, embeds_file)
    assert set(metrics) == {"test/psnr", "test/ssim", "test/dense_s", "test/sparse_s", "test/speedup"}
    assert metrics["test/psnr"] > 60, metrics
    assert abs(metrics["test/ssim"] - 1) < 1e-4, metrics
    for key in ("test/dense_s", "test/sparse_s", "test/speedup"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, metrics
    assert len(outputs) == 2 and outputs[0]["dense"].shape == (9, 3, 32, 48)
    assert not torch.equal(outputs[0]["dense"], outputs[1]["dense"])   # two prompts, two seeds: two videos
    rows = [json.loads(r) for r in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["index"], r["prompt"]) for r in rows] == [(0, "first"), (1, "second")]
    assert all(r["ssim"] > 0.9999 for r in rows)
    assert len(list((tmp_path / "out" / "00001_sparse").glob("*.png"))) == 9


def test_small_window_differs_and_dense_stays_dense(pipe, embeds_file):
    """A 1x1x1 window changes the video (finite PSNR, SSIM < 1); the dense run after a sparse one is
    still dense: two evaluations give the same dense frames, equal to a plain pipeline call."""
    module = SparseGenerationEval(pipeline=pipe, kernel_size=1, **GEN)
    first, outputs_1 = evaluate(module, embeds_file, batch_size=2)
    second, outputs_2 = evaluate(module, embeds_file, batch_size=2)
    assert math.isfinite(first["test/psnr"]) and 0 < first["test/psnr"] < 60, first
    assert first["test/ssim"] < 0.9999, first
    assert first["test/psnr"] == pytest.approx(second["test/psnr"], rel=1e-5)
    assert torch.equal(outputs_1[0]["dense"], outputs_2[0]["dense"])
    assert not torch.equal(outputs_1[0]["dense"], outputs_1[0]["sparse"])
    # the same seeds (seed + prompt index) in a plain dense call of the pipeline
    data = torch.load(embeds_file)
    plain = pipe(prompt_embeds=data["prompt_embeds"], negative_prompt_embeds=data["negative_prompt_embeds"].expand(2, -1, -1),
                 generator=[torch.Generator().manual_seed(i) for i in range(2)], output_type="pt", **GEN).frames
    torch.testing.assert_close(outputs_1[0]["dense"], plain.flatten(0, 1).float().clamp(0, 1), rtol=0, atol=1e-6)


def test_foveal_test_loads_a_local_pipeline(pipe, embeds_file, tmp_path, monkeypatch):
    """`foveal test -c configs/generation/wan_1.3b_neighborhood.yaml` end to end on CPU, shrunk: the
    pipeline comes from a local folder (from_pretrained, local_files_only) and metrics.json is written."""
    pipe.save_pretrained(tmp_path / "tiny-wan")
    monkeypatch.chdir(tmp_path)      # the recipe writes runs/... relative to the cwd
    overrides = ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
                 "--model.init_args.pipeline_path", str(tmp_path / "tiny-wan"),
                 "--model.init_args.pipeline_kwargs", "{text_encoder: null, tokenizer: null}",
                 "--model.init_args.vae_dtype", "null", "--model.init_args.kernel_size", "[2, 2, 2]",
                 "--model.init_args.dense_layers", "[1]", "--model.init_args.dense_steps", "1",
                 "--model.init_args.warmup_steps", "1", "--model.init_args.save", "none",
                 "--data.init_args.prompts", "null", "--data.init_args.embeds_file", str(embeds_file)]
    overrides += [a for k, v in GEN.items() for a in (f"--model.init_args.{k}", str(v))]
    main(["test", "-c", str(WAN_CONFIG), *overrides])
    run = tmp_path / "runs/generation/wan_1.3b_neighborhood"
    metrics = json.loads((run / "metrics.json").read_text())["test"]["metrics"]
    assert math.isfinite(metrics["test/psnr"]) and 0 < metrics["test/ssim"] < 1, metrics
    assert metrics["test/speedup"] > 0
    assert len((run / "videos" / "results.jsonl").read_text().splitlines()) == 2


def test_wan_recipe_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "-c", str(WAN_CONFIG), "--print_config"])
    assert exit_info.value.code in (0, None)
    parsed = yaml.safe_load(capsys.readouterr().out)
    model, data = parsed["model"], parsed["data"]
    assert model["class_path"] == "tasks.generation.SparseGenerationEval"
    assert data["class_path"] == "tasks.generation.PromptDataModule"
    assert parsed["trainer"]["precision"] == "bf16-mixed"
    args = model["init_args"]
    # the window is inside Wan's token grid at 480x832x81 and covers ~5% of it
    grid = (1 + (args["num_frames"] - 1) // 4, args["height"] // 16, args["width"] // 16)
    assert grid == (21, 30, 52)
    kernel = args["kernel_size"]
    assert all(k <= g for k, g in zip(kernel, grid))
    assert 0.03 < math.prod(kernel) / math.prod(grid) < 0.07
    assert args["dense_layers"] == [0] and args["dense_steps"] == 10 and args["num_inference_steps"] == 50
    assert len(data["init_args"]["prompts"]) >= 2


def test_prompt_datamodule_sources(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n\n# a comment\n  a dog  \n")
    dm = PromptDataModule(prompt_file=str(path), batch_size=2)
    batches = list(dm.test_dataloader())
    assert batches == [[{"prompt": "a cat", "index": 0}, {"prompt": "a dog", "index": 1}]]
    assert [len(b) for b in PromptDataModule(prompts=["a", "b", "c"], limit=2).test_dataloader()] == [1, 1]
    with pytest.raises(ValueError, match="exactly one"):
        PromptDataModule(prompts=["a"], prompt_file=str(path))
    with pytest.raises(ValueError, match="pipeline_path"):
        SparseGenerationEval()


RADIAL_CONFIG = ROOT / "configs" / "generation" / "wan_1.3b_radial.yaml"


def test_radial_method_runs_radial_attention(pipe, embeds_file, monkeypatch):
    """method="radial" sparsifies with radial attention (decay, rule and block from the module) for the
    sparse run only; the tiny grid's 18 tokens fit one 16-token block row pair, whose mask is dense."""
    import ops.radial

    calls = []
    real = ops.radial.radial_attention

    def spy(*args, **kwargs):
        calls.append((args[3:], kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr("zoo.diffusion.common.radial_attention", spy)
    module = SparseGenerationEval(pipeline=pipe, method="radial", decay_factor=0.5, radial_model="hunyuan",
                                  block_size=16, **GEN)
    metrics, _ = evaluate(module, embeds_file)
    assert calls and all(c == ((3, 0.5, "hunyuan"), {"text_tokens": 0, "block_size": 16}) for c in calls)
    assert metrics["test/psnr"] > 60, metrics                      # a dense mask: the dense video


def test_radial_recipe_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "-c", str(RADIAL_CONFIG), "--print_config"])
    assert exit_info.value.code in (0, None)
    args = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert args["method"] == "radial" and args["decay_factor"] == 0.2 and args["radial_model"] == "wan"
    assert args["dense_layers"] == [0] and args["dense_steps"] == 12 and args["block_size"] == 128
    from ops.radial import radial_block_mask
    frames, per_frame = 1 + (args["num_frames"] - 1) // 4, (args["height"] // 16) * (args["width"] // 16)
    assert abs(radial_block_mask(frames, per_frame, 128, args["decay_factor"]).float().mean().item() - 0.33) < 0.01
