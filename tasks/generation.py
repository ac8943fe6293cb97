"""Generation evaluation: a diffusers pipeline dense vs ``zoo.diffusion.sparsify``-ed, as a Lightning test.

    foveal test -c configs/generation/wan_1.3b_neighborhood.yaml \\
        --model.init_args.pipeline_path /models/Wan2.1-T2V-1.3B-Diffusers

For every batch of prompts, ``SparseGenerationEval.test_step`` runs the pipeline twice with the SAME
seeds (one ``torch.Generator`` per prompt, seeded ``seed + prompt index``, so a prompt's noise does
not depend on the batch size or the device): first with its original dense attention, then
sparsified (``zoo.diffusion.sparsify``, undone right after, so the next dense run is dense again).
Both runs are timed (wall time, CUDA-synchronised on a GPU; peak memory on CUDA too) and the sparse
output is scored against the dense one with torchmetrics' PSNR and SSIM (``data_range=1``, RGB in
[0, 1], a video's frames flattened into the batch: PSNR is the mean of per-frame PSNRs, inf where
the frames are identical).

Logged (epoch means over the prompts): ``test/psnr``, ``test/ssim``, ``test/dense_s`` and
``test/sparse_s`` (seconds per pipeline call), ``test/speedup`` (total dense time / total sparse
time) and on CUDA ``test/dense_mem_gb`` / ``test/sparse_mem_gb`` (peak allocated, max over batches).
With ``output_dir`` set, each prompt's dense and sparse outputs (mp4 or PNG) and a ``results.jsonl``
row (prompt, psnr, ssim, times) are written there.

The pipeline is not a child module: Lightning's precision plugin neither casts nor autocasts it.
Its dtype is ``torch_dtype`` (default: bf16 under a ``bf16-*`` trainer precision, fp16 under
``16-*``, else fp32) and ``vae_dtype`` (Wan's VAE is meant to run in fp32); autocast is switched
off around the pipeline calls so these dtypes are what runs.

``PromptDataModule`` serves prompts from a list, a text file (one per line) or precomputed text
embeddings (a ``torch.save``-d dict), so a run can skip loading the text encoder.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader
from torchmetrics.aggregation import SumMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

__all__ = ["PromptDataModule", "SparseGenerationEval", "as_frames"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def as_frames(output) -> torch.Tensor:
    """A pipeline output (``output_type="pt"``) -> float32 frames [N, C, H, W] in [0, 1]: a video's
    ``frames`` [B, F, C, H, W] flattened to [B * F, C, H, W], an image pipeline's ``images`` as they are."""
    x = getattr(output, "frames", None)
    if x is None:
        x = output.images
    if isinstance(x, (list, tuple)):
        x = torch.stack([torch.as_tensor(v) for v in x])
    if x.ndim == 5:
        x = x.flatten(0, 1)
    if x.ndim != 4:
        raise ValueError(f"expected frames [B, F, C, H, W] or images [B, C, H, W], got shape {tuple(x.shape)}")
    return x.float().clamp(0, 1)


class SparseGenerationEval(LightningModule):
    """Dense vs sparse generation with one diffusers pipeline: speed, memory, PSNR/SSIM to dense.

    Args:
        pipeline_path: a LOCAL diffusers pipeline folder (``DiffusionPipeline.from_pretrained(path,
            local_files_only=True)``); loaded in ``configure_model``. Or give ``pipeline``.
        pipeline: an already built pipeline (code and tests; not a CLI option).
        torch_dtype: the pipeline's dtype (``bfloat16``, ``float16``, ``float32``); None: from the
            trainer's precision (``bf16-*`` -> bf16, ``16-*`` -> fp16, else fp32).
        vae_dtype: cast the pipeline's VAE to this dtype after loading (Wan: ``float32``).
        pipeline_kwargs: extra ``from_pretrained`` arguments (e.g. ``{text_encoder: null, tokenizer:
            null}`` to skip the text encoder when the prompts come as embeddings).
        method, kernel_size, stride, dilation, dense_layers, dense_steps: ``zoo.diffusion.sparsify``'s
            (kernel_size etc. per token-grid axis: (frames, rows, cols) for video transformers;
            ``method="neighborhood"`` only).
        decay_factor, radial_model, block_size: ``sparsify``'s options for ``method="radial"``.
        height, width, num_frames, num_inference_steps, guidance_scale: the pipeline call's;
            ``num_frames`` only for video pipelines (None: not passed). None: the pipeline's default.
        negative_prompt: for string prompts (None: the pipeline's default).
        call_kwargs: any other pipeline call arguments.
        seed: prompt ``i`` is generated with ``torch.Generator().manual_seed(seed + i)``, both runs.
        warmup_steps: before the first batch, run the first prompt dense and sparse (every step sparse)
            with this many steps, untimed, so Triton compilation/autotuning and cuDNN/allocator warm-up
            stay out of the timings (0: no warm-up).
        output_dir: where to write the outputs and ``results.jsonl`` (None: nothing is written).
        save: ``mp4`` (``diffusers.utils.export_to_video``: needs ``imageio`` + ``imageio-ffmpeg``;
            single images are written as PNG), ``png``
            (one PNG per frame) or ``none`` (only ``results.jsonl``).
        fps: the mp4 frame rate (Wan: 16).
    """

    def __init__(self, pipeline_path: str | None = None, pipeline: Any = None, torch_dtype: str | None = None,
                 vae_dtype: str | None = None, pipeline_kwargs: dict[str, Any] | None = None,
                 method: str = "neighborhood", kernel_size: int | list[int] = 3, stride: int | list[int] = 1,
                 dilation: int | list[int] = 1, dense_layers: list[int] | None = None, dense_steps: int = 0,
                 decay_factor: float = 1.0, radial_model: str | None = None, block_size: int = 128,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 negative_prompt: str | None = None, call_kwargs: dict[str, Any] | None = None, seed: int = 0,
                 warmup_steps: int = 0, output_dir: str | None = None,
                 save: Literal["mp4", "png", "none"] = "mp4", fps: int = 16):
        super().__init__()
        if pipeline is None and not pipeline_path:
            raise ValueError("SparseGenerationEval needs pipeline_path (a local diffusers pipeline folder) or pipeline")
        if pipeline is not None and pipeline_path:
            raise ValueError("give pipeline_path or pipeline, not both")
        self.save_hyperparameters(ignore=["pipeline"])
        self.pipe = pipeline          # not an nn.Module: Lightning neither moves nor casts it
        # one PSNR per frame, averaged (inf where a frame is identical); SSIM's mean over frames
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.dense_total = SumMetric()
        self.sparse_total = SumMetric()
        self._warm = False

    # ---- the pipeline ----------------------------------------------------------------------
    def _resolve_dtype(self) -> torch.dtype:
        if self.hparams.torch_dtype is not None:
            return _dtype(self.hparams.torch_dtype)
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        return torch.bfloat16 if "bf16" in precision else torch.float16 if precision.startswith("16") else torch.float32

    def configure_model(self) -> None:
        if self.pipe is not None:
            return
        from diffusers import DiffusionPipeline

        self.pipe = DiffusionPipeline.from_pretrained(self.hparams.pipeline_path, dtype=self._resolve_dtype(),
                                                      local_files_only=True, **(self.hparams.pipeline_kwargs or {}))

    def on_test_start(self) -> None:
        self.configure_model()      # a module used outside a Trainer hook order still gets its pipeline
        if self.hparams.vae_dtype is not None and getattr(self.pipe, "vae", None) is not None:
            self.pipe.vae.to(dtype=_dtype(self.hparams.vae_dtype))
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)   # Lightning's bar counts the prompts

    # ---- one batch -------------------------------------------------------------------------
    def _call_kwargs(self, batch: list[dict[str, Any]], steps: int | None = None) -> dict[str, Any]:
        hp = self.hparams
        kwargs: dict[str, Any] = dict(hp.call_kwargs or {})
        for name in ("height", "width", "num_frames", "num_inference_steps", "guidance_scale"):
            if getattr(hp, name) is not None:
                kwargs[name] = getattr(hp, name)
        if steps is not None:
            kwargs["num_inference_steps"] = steps
        if "prompt_embeds" in batch[0]:
            kwargs["prompt_embeds"] = torch.stack([b["prompt_embeds"] for b in batch]).to(self.device)
            if batch[0].get("negative_prompt_embeds") is not None:
                kwargs["negative_prompt_embeds"] = torch.stack([b["negative_prompt_embeds"] for b in batch]).to(self.device)
        else:
            kwargs["prompt"] = [b["prompt"] for b in batch]
            if hp.negative_prompt is not None:
                kwargs["negative_prompt"] = [hp.negative_prompt] * len(batch)
        kwargs["output_type"] = "pt"
        return kwargs

    def _generate(self, batch: list[dict[str, Any]], sparse: bool, steps: int | None = None,
                  dense_steps: int | None = None) -> tuple[torch.Tensor, float, float | None]:
        """One pipeline call -> (frames [N, C, H, W], seconds, peak GiB on CUDA)."""
        from zoo.diffusion import sparsify, unsparsify

        hp = self.hparams
        generators = [torch.Generator().manual_seed(hp.seed + int(b["index"])) for b in batch]
        kwargs = self._call_kwargs(batch, steps)
        cuda = self.device.type == "cuda"
        if sparse:
            if hp.method == "radial":
                options = dict(decay_factor=hp.decay_factor, radial_model=hp.radial_model, block_size=hp.block_size)
            else:
                options = dict(kernel_size=hp.kernel_size, stride=hp.stride, dilation=hp.dilation)
            sparsify(self.pipe, method=hp.method, dense_layers=tuple(hp.dense_layers or ()),
                     dense_steps=hp.dense_steps if dense_steps is None else dense_steps, **options)
        try:
            if cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                output = self.pipe(**kwargs, generator=generators)
            if cuda:
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
        finally:
            if sparse:
                unsparsify(self.pipe)        # the next dense run is dense
        peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 30 if cuda else None
        return as_frames(output), seconds, peak

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, torch.Tensor]:
        if not self._warm and self.hparams.warmup_steps > 0:
            for sparse in (False, True):
                self._generate(batch[:1], sparse, steps=self.hparams.warmup_steps, dense_steps=0)
        self._warm = True
        dense, dense_s, dense_mem = self._generate(batch, sparse=False)
        sparse, sparse_s, sparse_mem = self._generate(batch, sparse=True)
        n = len(batch)
        self.psnr(sparse, dense)
        self.ssim(sparse, dense)
        self.dense_total.update(torch.tensor(dense_s, device=self.device))
        self.sparse_total.update(torch.tensor(sparse_s, device=self.device))
        self.log("test/psnr", self.psnr, batch_size=n, prog_bar=True)
        self.log("test/ssim", self.ssim, batch_size=n, prog_bar=True)
        self.log("test/dense_s", dense_s, batch_size=n, on_epoch=True, sync_dist=True)
        self.log("test/sparse_s", sparse_s, batch_size=n, on_epoch=True, sync_dist=True)
        if dense_mem is not None:
            self.log("test/dense_mem_gb", dense_mem, reduce_fx="max", on_epoch=True, sync_dist=True)
            self.log("test/sparse_mem_gb", sparse_mem, reduce_fx="max", on_epoch=True, sync_dist=True)
        if self.hparams.output_dir:
            self._save(batch, dense, sparse, dense_s, sparse_s)
        return {"dense": dense, "sparse": sparse}

    def on_test_epoch_end(self) -> None:
        dense, sparse = self.dense_total.compute(), self.sparse_total.compute()
        self.log("test/speedup", dense / sparse if sparse > 0 else torch.tensor(float("nan")))
        self.dense_total.reset()
        self.sparse_total.reset()

    # ---- outputs ---------------------------------------------------------------------------
    def _save(self, batch, dense: torch.Tensor, sparse: torch.Tensor, dense_s: float, sparse_s: float) -> None:
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        out = Path(self.hparams.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        per_item = dense.shape[0] // len(batch)     # frames per prompt (1 for an image pipeline)
        rank = f".rank{self.global_rank}" if self._trainer is not None and self.trainer.world_size > 1 else ""
        with (out / f"results{rank}.jsonl").open("a") as f:
            for i, item in enumerate(batch):
                d, s = dense[i * per_item:(i + 1) * per_item], sparse[i * per_item:(i + 1) * per_item]
                stem = f"{int(item['index']):05d}"
                for kind, x in (("dense", d), ("sparse", s)):
                    self._write_frames(out / f"{stem}_{kind}", x)
                psnr = float(peak_signal_noise_ratio(s, d, data_range=1.0, dim=(1, 2, 3)))
                ssim = float(structural_similarity_index_measure(s, d, data_range=1.0))
                f.write(json.dumps({"index": int(item["index"]), "prompt": item.get("prompt"),
                                    "psnr": psnr if math.isfinite(psnr) else str(psnr), "ssim": ssim,
                                    "dense_s": dense_s, "sparse_s": sparse_s, "batch_size": len(batch)}) + "\n")

    def _write_frames(self, stem: Path, frames: torch.Tensor) -> None:
        from PIL import Image

        save = self.hparams.save
        if save == "none":
            return
        arrays = (frames.permute(0, 2, 3, 1).cpu().numpy() * 255).round().clip(0, 255).astype("uint8")
        if len(arrays) == 1:
            Image.fromarray(arrays[0]).save(stem.with_suffix(".png"))
        elif save == "mp4":
            from diffusers.utils import export_to_video

            # PIL frames: export_to_video scales numpy frames by 255 (it expects floats in [0, 1])
            export_to_video([Image.fromarray(a) for a in arrays], str(stem.with_suffix(".mp4")), fps=self.hparams.fps)
        else:
            stem.mkdir(parents=True, exist_ok=True)
            for j, a in enumerate(arrays):
                Image.fromarray(a).save(stem / f"{j:04d}.png")


# ---- prompts ----------------------------------------------------------------------------------
class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _keep_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items          # the module stacks what it needs; prompts stay strings


class PromptDataModule(LightningDataModule):
    """Prompts for ``foveal test``: exactly one of

    - ``prompts``: a list in the config;
    - ``prompt_file``: a text file, one prompt per line (blank lines and ``#`` lines skipped);
    - ``embeds_file``: a ``torch.save``-d dict with ``prompt_embeds`` [N, L, D], optionally
      ``negative_prompt_embeds`` ([N, L, D] or [1, L, D], shared) and ``prompts`` (N strings, for the
      results file): the pipeline's text encoder is then never run.

    Each item is ``{"index": i, "prompt": ...}`` or ``{"index": i, "prompt_embeds": ..., ...}``; a batch
    is a list of items (the module seeds prompt ``i`` with ``seed + i``). ``limit``: the first N only.
    """

    def __init__(self, prompts: list[str] | None = None, prompt_file: str | None = None,
                 embeds_file: str | None = None, batch_size: int = 1, num_workers: int = 0,
                 limit: int | None = None):
        super().__init__()
        if sum(x is not None for x in (prompts, prompt_file, embeds_file)) != 1:
            raise ValueError("PromptDataModule needs exactly one of prompts, prompt_file, embeds_file")
        self.save_hyperparameters()
        self.items: list[dict[str, Any]] | None = None

    def _load(self) -> list[dict[str, Any]]:
        hp = self.hparams
        if hp.prompts is not None:
            items = [{"prompt": p} for p in hp.prompts]
        elif hp.prompt_file is not None:
            lines = Path(hp.prompt_file).read_text(encoding="utf-8").splitlines()
            items = [{"prompt": s.strip()} for s in lines if s.strip() and not s.lstrip().startswith("#")]
        else:
            data = torch.load(hp.embeds_file, map_location="cpu", weights_only=True)
            embeds = data["prompt_embeds"]
            negative = data.get("negative_prompt_embeds")
            if negative is not None and negative.shape[0] not in (1, embeds.shape[0]):
                raise ValueError(f"negative_prompt_embeds has {negative.shape[0]} rows; expected 1 or "
                                 f"{embeds.shape[0]} (one per prompt_embeds row)")
            names = data.get("prompts") or [None] * embeds.shape[0]
            items = [{"prompt": names[i], "prompt_embeds": embeds[i],
                      "negative_prompt_embeds": None if negative is None else negative[i if len(negative) > 1 else 0]}
                     for i in range(embeds.shape[0])]
        if hp.limit is not None:
            items = items[:hp.limit]
        if not items:
            raise ValueError("PromptDataModule: no prompts")
        return [dict(item, index=i) for i, item in enumerate(items)]

    def setup(self, stage: str | None = None) -> None:
        if self.items is None:
            self.items = self._load()

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(_Items(self.items), batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=_keep_list)
