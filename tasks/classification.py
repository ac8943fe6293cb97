"""Image classification as a LightningModule around any ``timm.create_model`` name.

The recipe pieces are timm's own (Mixup/CutMix + SoftTargetCrossEntropy, ModelEmaV3,
create_optimizer_v2, CosineLRScheduler); Lightning supplies the loop, precision (bf16
autocast with ``trainer.precision: bf16-mixed``), gradient clipping
(``trainer.gradient_clip_val``) and the distributed strategies.

Logged metrics: ``train/loss``, ``lr``, ``val/loss``, ``val/acc``, ``val/acc_top5`` and, when EMA
is on, ``val/acc_ema`` and ``val/acc_top5_ema`` (same for ``test/``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class ImageClassifier(LightningModule):
    """Train/evaluate ``timm.create_model(model_name, ...)`` (zoo names after ``import zoo``).

    Args:
        model_name: a timm name, e.g. ``van_b0`` or ``biformer_tiny`` (zoo) or ``resnet50``.
        num_classes: classifier width.
        pretrained: load the model's pretrained weights (``pretrained_file`` for a local file).
        pretrained_file: local safetensors/pth file (``foveal weights convert`` output); offline.
        drop_path_rate: stochastic depth (the per-variant value of the official recipe).
        model_kwargs: extra ``create_model`` arguments (e.g. ``use_kernels: false``).
        lr: peak learning rate for the *global* batch this run uses (see the configs for the
            official batch/lr scaling rule of each recipe).
        weight_decay: AdamW weight decay; norms, biases and ``no_weight_decay()`` get none.
        opt: timm optimizer name; ``opt_eps``/``opt_betas`` are passed to it.
        warmup_epochs / warmup_lr / min_lr / cooldown_epochs: linear warm-up from ``warmup_lr``,
            then cosine to ``min_lr``; the last ``cooldown_epochs`` stay at ``min_lr``
            (timm 0.4.12 ``--cooldown-epochs``). Stepped every optimizer step.
        mixup / cutmix / mixup_switch_prob: timm Mixup alphas (0 disables each).
        label_smoothing: folded into the soft targets with mixup, else CrossEntropyLoss's.
        ema_decay: ``ModelEmaV3`` decay (None: no EMA); ``ema_warmup`` ramps the decay up.
        channels_last: NHWC weights and inputs (faster convolutions on GPU).
        compile: run the model through ``torch.compile`` (in place: checkpoints keep their keys;
            the EMA copy stays eager), meant for small backbones whose eager step is bound by the
            host's launch cost (VAN-b0). ``compile_mode`` / ``compile_backend`` are passed on.
    """

    def __init__(self, model_name: str, num_classes: int = 1000, pretrained: bool = False,
                 pretrained_file: str | None = None, drop_path_rate: float = 0.0,
                 model_kwargs: dict[str, Any] | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.05, opt: str = "adamw", opt_eps: float = 1e-8,
                 opt_betas: tuple[float, float] | None = None,
                 warmup_epochs: float = 5.0, warmup_lr: float = 1e-6, min_lr: float = 1e-6,
                 cooldown_epochs: float = 0.0,
                 mixup: float = 0.0, cutmix: float = 0.0, mixup_switch_prob: float = 0.5,
                 label_smoothing: float = 0.1, ema_decay: float | None = None, ema_warmup: bool = False,
                 channels_last: bool = True, compile: bool = False, compile_mode: str | None = None,
                 compile_backend: str = "inductor"):
        super().__init__()
        self.save_hyperparameters()
        import timm

        import zoo  # noqa: F401  (registers the zoo names with timm)

        kwargs = dict(model_kwargs or {})
        if pretrained_file:
            from .weights import file_overlay

            kwargs["pretrained_cfg_overlay"] = file_overlay(pretrained_file)
        self.model = timm.create_model(model_name, pretrained=pretrained or bool(pretrained_file),
                                       num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = None
        if ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=ema_warmup)
        if compile:   # after the EMA's deep copy, which stays eager
            self.model.compile(mode=compile_mode, backend=compile_backend)

        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, switch_prob=mixup_switch_prob,
                                  label_smoothing=label_smoothing, num_classes=num_classes)
        from timm.loss import SoftTargetCrossEntropy

        self.train_loss = SoftTargetCrossEntropy() if self.mixup_fn else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_loss = nn.CrossEntropyLoss()
        top_k = (1, 5) if num_classes > 5 else (1,)
        heads = ("",) + (("_ema",) if self.ema is not None else ())
        # one metric set per stage ("val", "test") x weights ("", "_ema") x k
        self.metrics = nn.ModuleDict({
            f"{stage}{head}{'' if k == 1 else '_top5'}": MulticlassAccuracy(num_classes, top_k=k)
            for stage in ("val", "test") for head in heads for k in top_k})

    # ---- steps ------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last and x.ndim == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> logits [B, num_classes]."""
        return self.model(self._prepare(x))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup_fn is not None:
            x, y = self.mixup_fn(x, y)   # y becomes soft targets [B, num_classes]
        loss = self.train_loss(self(x), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", self.eval_loss(logits, y), prog_bar=True, sync_dist=True)
        outputs = {"": logits}
        if self.ema is not None:
            outputs["_ema"] = self.ema.module(self._prepare(x))
        for head, out in outputs.items():
            for suffix in ("", "_top5"):
                name = f"{stage}{head}{suffix}"
                if name in self.metrics:
                    metric = self.metrics[name]
                    metric.update(out, y)
                    self.log(f"{stage}/acc{suffix}{head}", metric, prog_bar=suffix == "", on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        model = self.ema.module if self.ema is not None else self.model
        probs = model(self._prepare(x)).float().softmax(-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        return {"top_probs": top.values, "top_classes": top.indices}

    # ---- optimisation -----------------------------------------------------------------
    def configure_optimizers(self):
        import timm.optim
        from timm.scheduler import CosineLRScheduler

        hp = self.hparams
        extra = {"eps": hp.opt_eps} if hp.opt_eps is not None else {}
        if hp.opt_betas is not None:
            extra["betas"] = tuple(hp.opt_betas)
        # filter_bias_and_bn: no weight decay on 1-D params (norms, biases) and no_weight_decay()
        optimizer = timm.optim.create_optimizer_v2(self.model, opt=hp.opt, lr=hp.lr, weight_decay=hp.weight_decay,
                                                   filter_bias_and_bn=True, **extra)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = min(int(hp.warmup_epochs * per_epoch), max(0, total - 1))
        cooldown = int(hp.cooldown_epochs * per_epoch)
        scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup - cooldown), lr_min=hp.min_lr,
                                      warmup_t=warmup, warmup_lr_init=hp.warmup_lr, warmup_prefix=True,
                                      t_in_epochs=False)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped by update count, not by epoch
        scheduler.step_update(num_updates=self.global_step)


class PredictionWriter(BasePredictionWriter):
    """Writes ``foveal predict`` results as JSON lines: {"index", "top_classes", "top_probs"}."""

    def __init__(self, output_file: str = "predictions.jsonl"):
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions, batch_indices) -> None:
        path = Path(self.output_file)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for batch, indices in zip(predictions, batch_indices[0] if batch_indices else []):
                for row, index in enumerate(indices):
                    f.write(json.dumps({"index": int(index), "top_classes": batch["top_classes"][row].tolist(),
                                        "top_probs": [round(p, 5) for p in batch["top_probs"][row].tolist()]}) + "\n")
        print(f"predictions: {path}")


class MetricsWriter(Callback):
    """Writes the final logged metrics (and the run's setup) as JSON when fit/validate/test ends."""

    def __init__(self, output_file: str = "metrics.json"):
        self.output_file = output_file

    def _write(self, trainer: Trainer, stage: str) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        path = Path(self.output_file)
        record = {}
        if path.exists():
            record = json.loads(path.read_text())
        module = trainer.lightning_module
        record[stage] = {
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "model": module.hparams.get("model_name"), "epochs": trainer.current_epoch,
            "global_step": trainer.global_step, "precision": str(trainer.precision),
            "devices": trainer.num_devices, "num_nodes": trainer.num_nodes, "strategy": type(trainer.strategy).__name__,
            "accelerator": type(trainer.accelerator).__name__,
            "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "fit")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, "validate")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "test")
