"""What both demo apps share: load a zoo model (random or from a local checkpoint), preprocess
with timm's data config, predict, and draw the result (class palette, overlay, label names).

A :class:`Predictor` wraps one ``timm.create_model`` name. Its kind follows the model: a model
with ``segment(x)`` (BEVANet) is a segmentation model, anything else a classifier. Images are
RGB ``uint8`` arrays ``[H, W, 3]`` throughout; OpenCV's BGR stays inside ``apps.video``.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Cityscapes' 19 train ids (the order of BEVANet's 19 output channels) and their official colours
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

CLASSIFICATION, SEGMENTATION = "classification", "segmentation"


class AppError(ValueError):
    """A user error (bad file, model name, device): the CLIs print it and exit with status 2."""


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AppError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def check_model_name(name: str) -> None:
    """Raise :class:`AppError` naming close matches when ``name`` is no timm/zoo model."""
    import timm

    import zoo  # noqa: F401  (registers the zoo's models with timm)

    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise AppError(f"--model {name!r} is not a timm/zoo model name{hint} "
                       "(zoo: van_b0..van_b6, biformer_*, vig_*, vig_h_*, bevanet_s/bevanet/bevanet_sw/bevanet_l)")


def random_weights_warning(name: str) -> str:
    return (f"warning: {name} has random weights (no --checkpoint): its outputs are meaningless. "
            "`foveal weights list` lists the official checkpoints (URLs); convert a downloaded one with "
            "`foveal weights convert` and pass the file as --checkpoint.")


def create_model(name: str, checkpoint: str | Path | None = None, device: torch.device | str = "cpu",
                 warn: bool = True) -> torch.nn.Module:
    """``timm.create_model(name)`` in eval mode on ``device``: the weights of a local
    ``checkpoint`` file (safetensors / pth, loaded offline by timm through
    ``tasks.weights.file_overlay``), else random weights with a warning on stderr."""
    import timm

    from tasks.weights import file_overlay

    check_model_name(name)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise AppError(f"--checkpoint {checkpoint}: no such file")
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=file_overlay(checkpoint))
    else:
        if warn:
            print(random_weights_warning(name), file=sys.stderr)
        model = timm.create_model(name, pretrained=False)
    return model.eval().to(device)


def model_kind(model: torch.nn.Module) -> str:
    return SEGMENTATION if callable(getattr(model, "segment", None)) else CLASSIFICATION


def class_names(model: torch.nn.Module) -> list[str]:
    """Readable names of the model's outputs: ImageNet descriptions for an ImageNet head
    (``timm.data.ImageNetInfo``, offline), the Cityscapes train ids for a 19-class segmentation
    model, else ``class <i>``."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    n = int(model.num_classes)
    if model_kind(model) == SEGMENTATION:
        return list(CITYSCAPES_CLASSES) if n == len(CITYSCAPES_CLASSES) else [f"class {i}" for i in range(n)]
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == n:
            return [info.index_to_description(i) for i in range(n)]
    return [f"class {i}" for i in range(n)]


def palette(num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8 RGB: the Cityscapes palette for 19 classes, else fixed random colours."""
    if num_classes == len(CITYSCAPES_PALETTE):
        return CITYSCAPES_PALETTE.copy()
    return np.random.default_rng(0).integers(0, 256, (num_classes, 3), dtype=np.uint8)


def blend(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors[labels]`` as uint8 [H, W, 3]."""
    if not 0.0 <= alpha <= 1.0:
        raise AppError(f"--alpha {alpha}: must lie in [0, 1]")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colors[labels].astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    image = image[..., :3]   # RGBA -> RGB
    if image.dtype != np.uint8:
        if image.dtype.kind == "f" and image.max() <= 1.0:   # float images in [0, 1]
            image = image * 255.0
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


class Predictor:
    """One model with its preprocessing (``timm.data.resolve_data_config``) and label names.

    Args:
        model_name: a timm/zoo name (a ``.tag`` picks a pretrained cfg, e.g. ``bevanet.ade20k``).
        checkpoint: local weights file; ``None`` gives random weights (and a warning).
        device: ``cuda`` / ``cpu``; ``None`` picks CUDA when present.
        seg_size: segmentation only: resize so the longer side is at most this before the model
            (``None``: the image's own size); the labels come back at the image's size.
    """

    def __init__(self, model_name: str, checkpoint: str | Path | None = None, device: str | None = None,
                 seg_size: int | None = None, warn: bool = True):
        from timm.data import resolve_data_config

        self.device = resolve_device(device)
        self.model_name = model_name
        self.random_weights = checkpoint is None
        self.model = create_model(model_name, checkpoint, self.device, warn=warn)
        self.kind = model_kind(self.model)
        self.names = class_names(self.model)
        self.colors = palette(len(self.names))
        self.data_config = resolve_data_config({}, model=self.model)
        self.seg_size = seg_size
        self._transform = None

    # classification ------------------------------------------------------------------------
    def _classification_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        from PIL import Image
        from timm.data import create_transform

        if self._transform is None:
            self._transform = create_transform(**self.data_config)   # eval: resize, center crop, normalize
        return torch.stack([self._transform(Image.fromarray(_as_rgb(im))) for im in images])

    @torch.no_grad()
    def classify(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Softmax probabilities [B, num_classes] (float32, CPU) of RGB uint8 images."""
        if self.kind != CLASSIFICATION:
            raise AppError(f"{self.model_name} is a segmentation model, not a classifier")
        x = self._classification_batch(images).to(self.device)
        return self.model(x).float().softmax(-1).cpu()

    def topk(self, probs: torch.Tensor, k: int = 5) -> list[dict[str, float]]:
        """Per image, ``{label: probability}`` of the ``k`` most likely classes."""
        values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
        return [{self.names[i]: float(v) for v, i in zip(vs.tolist(), ix.tolist())}
                for vs, ix in zip(values, indices)]

    # segmentation --------------------------------------------------------------------------
    def _model_size(self, height: int, width: int) -> tuple[int, int]:
        if self.seg_size is None or max(height, width) <= self.seg_size:
            return height, width
        scale = self.seg_size / max(height, width)
        return max(8, round(height * scale)), max(8, round(width * scale))

    @torch.no_grad()
    def segment(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class labels [B, H, W] (int64) of same-sized RGB uint8 images, at their size."""
        if self.kind != SEGMENTATION:
            raise AppError(f"{self.model_name} is a classifier, not a segmentation model")
        batch = np.stack([_as_rgb(im) for im in images])
        height, width = batch.shape[1:3]
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self._model_size(height, width)
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.data_config["mean"], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.data_config["std"], device=self.device).view(1, 3, 1, 1)
        logits = self.model.segment((x - mean) / std)
        if size != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits.argmax(1).cpu().numpy()

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The image with the class colours of ``labels`` blended in."""
        return blend(_as_rgb(image), labels, self.colors, alpha)
