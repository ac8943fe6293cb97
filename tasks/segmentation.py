"""Semantic segmentation as a LightningModule around a ``timm.create_model`` segmentation network
(BEVANet), with the official BEVANet / PIDNet training objective.

Loss (``loss="bevanet"``, the official ``FullModel``): every head is upsampled to the label's size
(bilinear), then ``0.4 * CE(detail-semantic head) + OHEM(main) + 20 * balanced BCE(boundary head,
boundary labels) + OHEM(main, only where sigmoid(boundary) > 0.8)``, the cross-entropies weighted by
class and ignoring ``ignore_index``. ``loss="ohem"`` trains the main head alone (networks without
``forward_aux``). Optimiser: SGD with momentum and a per-step poly schedule (power 0.9), weight
decay on every parameter, as the official recipe.

Logged: ``train/loss`` (and its parts ``train/loss_sem``, ``train/loss_boundary``, ``train/loss_sb``),
``lr``, ``val/loss``, ``val/miou`` (mean IoU over classes, torchmetrics) and ``val/acc`` (pixel
accuracy); same for ``test/``. Batches are ``(images [B, 3, H, W], labels [B, H, W] int64,
boundaries [B, H, W] float)`` (``tasks.segmentation_data``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

__all__ = ["SegmentationWriter", "SemanticSegmenter", "balanced_bce", "bevanet_loss", "ohem_cross_entropy"]


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, thresh: float = 0.9,
                       min_kept: int = 131072, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Online hard example mining: the mean cross-entropy of the labelled pixels whose probability of
    the true class is below ``max(thresh, p_k)``, p_k the ``min_kept``-th smallest such probability
    (so at least ~``min_kept`` pixels count). logits [B, K, H, W], target [B, H, W]; 0 when no pixel
    is labelled or none is hard (the official code would return NaN there)."""
    losses = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index,
                             reduction="none").flatten()
    valid = target.flatten() != ignore_index
    if not bool(valid.any()):
        return losses.sum() * 0.0
    prob = logits.float().softmax(1).gather(1, target.clamp(0, logits.shape[1] - 1).unsqueeze(1)).flatten()[valid]
    prob, order = prob.sort()
    threshold = prob[min(min_kept, prob.numel() - 1)].clamp(min=thresh)   # a tensor: no host sync
    kept = losses[valid][order][prob < threshold]
    return kept.sum() / max(kept.numel(), 1)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of boundary logits [B, 1, H, W] against boundary labels [B, H, W] in
    [0, 1], each class weighted by the other's share of the pixels (the official ``weighted_bce``)."""
    logits, target = logits.float().flatten(), target.float().flatten()
    pos = target >= 0.5
    n_pos = pos.sum()
    weight = torch.where(pos, target.numel() - n_pos, n_pos).float() / target.numel()
    return F.binary_cross_entropy_with_logits(logits, target, weight)


def bevanet_loss(outputs: Sequence[torch.Tensor], labels: torch.Tensor, boundaries: torch.Tensor,
                 class_weights: torch.Tensor | None = None, ignore_index: int = 255, aux_weight: float = 0.4,
                 boundary_weight: float = 20.0, ohem_thresh: float = 0.9, ohem_min_kept: int = 131072,
                 align_corners: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official BEVANet objective from ``forward_aux``'s [detail-semantic, main, boundary] logits
    (any resolution; upsampled to the labels'). Returns (total, {"sem", "boundary", "sb"})."""
    size = labels.shape[-2:]
    ds, main, bd = (o if o.shape[-2:] == size else
                    F.interpolate(o, size=size, mode="bilinear", align_corners=align_corners) for o in outputs)
    ohem = dict(ignore_index=ignore_index, thresh=ohem_thresh, min_kept=ohem_min_kept, weight=class_weights)
    sem = aux_weight * F.cross_entropy(ds.float(), labels, weight=class_weights, ignore_index=ignore_index) \
        + ohem_cross_entropy(main, labels, **ohem)
    boundary = boundary_weight * balanced_bce(bd, boundaries)
    on_edges = torch.where(torch.sigmoid(bd[:, 0].float()) > 0.8, labels, torch.full_like(labels, ignore_index))
    sb = ohem_cross_entropy(main, on_edges, **ohem)
    return sem + boundary + sb, {"sem": sem.detach(), "boundary": boundary.detach(), "sb": sb.detach()}


class SemanticSegmenter(LightningModule):
    """Train/evaluate ``timm.create_model(model_name, ...)`` for semantic segmentation (zoo names
    after ``import zoo``: ``bevanet_s``, ``bevanet``, ...).

    Args:
        model_name: a timm name whose model maps [B, 3, H, W] to logits [B, K, h, w] (and, for
            ``loss="bevanet"``, has ``forward_aux``).
        num_classes: classes K (19 for Cityscapes).
        pretrained / pretrained_file: the model's pretrained weights; a local file (an official
            release or ``foveal weights convert`` output) is read offline. ``pretrained_tag``
            picks the cfg (``in1k`` for the ImageNet backbone releases).
        model_kwargs: extra ``create_model`` arguments (e.g. ``use_kernels: false``).
        loss: ``bevanet`` (the official four-part objective) or ``ohem`` (main head only).
        class_weights: per-class cross-entropy weights (the official Cityscapes ones in the config).
        ignore_index: label of unlabelled pixels.
        aux_weight / boundary_weight / ohem_thresh / ohem_min_kept: the objective's constants.
        lr / momentum / weight_decay / poly_power: SGD and its per-step poly decay to 0.
        align_corners: how logits are upsampled to the labels (the official configs: True).
        channels_last: NHWC weights and inputs (faster convolutions on GPU).
        compile / compile_mode / compile_backend: ``torch.compile`` the network in place
            (``reduce-overhead``: CUDA graphs, for small batches bound by the host).
    """

    def __init__(self, model_name: str = "bevanet_s", num_classes: int = 19, pretrained: bool = False,
                 pretrained_file: str | None = None, pretrained_tag: str | None = None,
                 model_kwargs: dict[str, Any] | None = None, loss: str = "bevanet",
                 class_weights: list[float] | None = None, ignore_index: int = 255, aux_weight: float = 0.4,
                 boundary_weight: float = 20.0, ohem_thresh: float = 0.9, ohem_min_kept: int = 131072,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4, poly_power: float = 0.9,
                 align_corners: bool = True, channels_last: bool = True, compile: bool = False,
                 compile_mode: str | None = None, compile_backend: str = "inductor"):
        super().__init__()
        if loss not in ("bevanet", "ohem"):
            raise ValueError(f"loss must be 'bevanet' or 'ohem' (got {loss!r})")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for num_classes={num_classes}")
        self.save_hyperparameters()
        import timm

        import zoo  # noqa: F401  (registers the zoo names with timm)

        kwargs = dict(model_kwargs or {})
        if pretrained_file:
            from .weights import file_overlay

            kwargs["pretrained_cfg_overlay"] = file_overlay(pretrained_file)
        name = f"{model_name}.{pretrained_tag}" if pretrained_tag else model_name
        self.model = timm.create_model(name, pretrained=pretrained or bool(pretrained_file),
                                       num_classes=num_classes, **kwargs)
        if loss == "bevanet" and not hasattr(self.model, "forward_aux"):
            raise ValueError(f"loss='bevanet' needs a model with forward_aux (BEVANet); {model_name} has none: "
                             "use loss='ohem'")
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile(mode=compile_mode, backend=compile_backend)
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights),
                             persistent=False)
        self.metrics = nn.ModuleDict({
            f"{stage}_{name}": metric(num_classes, ignore_index=ignore_index, **kw)
            for stage in ("val", "test")
            for name, metric, kw in (("miou", MulticlassJaccardIndex, dict(average="macro")),
                                     ("acc", MulticlassAccuracy, dict(average="micro")))})

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def _upsample(self, logits: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.hparams.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> logits [B, K, H, W] (the network's output upsampled to the input)."""
        return self._upsample(self.model(self._prepare(x)), x.shape[-2:])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, labels, boundaries = batch
        hp = self.hparams
        if hp.loss == "bevanet":
            loss, parts = bevanet_loss(self.model.forward_aux(self._prepare(x)), labels, boundaries,
                                       self.class_weights, hp.ignore_index, hp.aux_weight, hp.boundary_weight,
                                       hp.ohem_thresh, hp.ohem_min_kept, hp.align_corners)
            for k, v in parts.items():
                self.log(f"train/loss_{k}", v, on_step=True, on_epoch=True, sync_dist=True)
        else:
            loss = ohem_cross_entropy(self._upsample(self.model(self._prepare(x)), labels.shape[-2:]), labels,
                                      hp.ignore_index, hp.ohem_thresh, hp.ohem_min_kept, self.class_weights)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, labels = batch[0], batch[1]
        logits = self._upsample(self.model(self._prepare(x)), labels.shape[-2:])
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weights, ignore_index=self.hparams.ignore_index)
        preds = logits.argmax(1)
        for name in ("miou", "acc"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(preds, labels)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "miou")
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Class map [B, H, W] (uint8 for up to 256 classes) at the input's resolution."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        preds = self(x).argmax(1)
        return preds.to(torch.uint8) if self.hparams.num_classes <= 256 else preds

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(1.0 - step / total, 0.0) ** hp.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SegmentationWriter(BasePredictionWriter):
    """Writes ``foveal predict`` class maps as 8-bit PNGs, ``{output_dir}/{index:06d}.png`` (the
    dataset index of each image; pixel value = class id), as each batch ends."""

    def __init__(self, output_dir: str = "predictions"):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: torch.Tensor,
                           batch_indices, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        from pathlib import Path

        from PIL import Image

        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for index, labels in zip(batch_indices or range(len(prediction)), prediction.to(torch.uint8).cpu().numpy()):
            Image.fromarray(labels).save(out / f"{int(index):06d}.png")
