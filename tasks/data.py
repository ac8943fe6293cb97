"""Classification datamodules: ImageNet-layout folders and scikit-learn's digits (offline).

Both build their transforms with ``timm.data.create_transform`` from the model's data
config (mean/std, interpolation, crop_pct), read from the LightningModule the trainer is
fitting, so a VAN (mean = std = 0.5) and a BiFormer (ImageNet mean/std) each get their own
preprocessing without repeating it in the data config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class _TimmTransformsDataModule(LightningDataModule):
    """Shared: timm train/eval transforms and the loaders. Subclasses make ``_datasets``."""

    def __init__(self, batch_size: int = 128, num_workers: int = 4, img_size: int = 224,
                 crop_pct: float | None = None, scale: tuple[float, float] = (0.08, 1.0),
                 hflip: float = 0.5, color_jitter: float | None = 0.4, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                 interpolation: str | None = None, train_interpolation: str = "random",
                 re_prob: float = 0.25, re_mode: str = "pixel", pin_memory: bool = True,
                 persistent_workers: bool = False):
        """``batch_size`` is per device (global batch = batch_size x devices x num_nodes).

        ``crop_pct``/``interpolation`` default to the model's pretrained cfg; the rest are the
        timm ``train.py`` augmentation flags (``auto_augment``, ``re_prob``, ...)."""
        super().__init__()
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    # ---- transforms -------------------------------------------------------------------
    def data_config(self) -> dict[str, Any]:
        """The model's timm data config when a trainer is attached, else ImageNet defaults."""
        from timm.data import resolve_data_config

        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        trainer = getattr(self, "trainer", None)
        model = getattr(trainer.lightning_module, "model", None) if trainer is not None else None
        if model is not None:
            cfg = resolve_data_config({}, model=model)
        else:
            cfg = dict(interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875)
        cfg["input_size"] = (3, self.hparams.img_size, self.hparams.img_size)
        if self.hparams.crop_pct is not None:
            cfg["crop_pct"] = self.hparams.crop_pct
        if self.hparams.interpolation is not None:
            cfg["interpolation"] = self.hparams.interpolation
        return cfg

    def transforms(self, training: bool):
        from timm.data import create_transform

        cfg, hp = self.data_config(), self.hparams
        if not training:
            return create_transform(**cfg, is_training=False)
        return create_transform(
            input_size=cfg["input_size"], is_training=True, scale=tuple(hp.scale), hflip=hp.hflip,
            color_jitter=hp.color_jitter, auto_augment=hp.auto_augment,
            interpolation=hp.train_interpolation, mean=cfg["mean"], std=cfg["std"],
            re_prob=hp.re_prob, re_mode=hp.re_mode)

    # ---- loaders ----------------------------------------------------------------------
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(dataset, batch_size=hp.batch_size, shuffle=train, drop_last=train,
                          num_workers=hp.num_workers, pin_memory=hp.pin_memory and torch.cuda.is_available(),
                          persistent_workers=hp.persistent_workers and hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)


class ImageFolderDataModule(_TimmTransformsDataModule):
    """ImageNet layout: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG``."""

    def __init__(self, root: str, train_split: str = "train", val_split: str = "val", **kwargs: Any):
        super().__init__(**kwargs)
        self.root, self.train_split, self.val_split = Path(root), train_split, val_split

    def setup(self, stage: str) -> None:
        from torchvision.datasets import ImageFolder

        for split in (self.val_split,) + ((self.train_split,) if stage == "fit" else ()):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(f"data.root: expected class folders under {self.root / split}")
        if stage == "fit":
            self.train_set = ImageFolder(str(self.root / self.train_split), transform=self.transforms(True))
        self.val_set = ImageFolder(str(self.root / self.val_split), transform=self.transforms(False))


class _ArrayDataset(Dataset):
    """uint8 images [N, H, W] (grayscale) -> RGB PIL images through a transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i], mode="L").convert("RGB")
        return self.transform(image), int(self.labels[i])


class DigitsDataModule(_TimmTransformsDataModule):
    """scikit-learn's digits: 1,797 real 8x8 handwritten digits, 10 classes, no download.

    The 8x8 images (values 0..16) become uint8 grayscale, upsampled by the timm transform to
    ``img_size`` (bicubic) and repeated to 3 channels. The train/val split is stratified and
    fixed by ``split_seed`` (default 20% val = 360 images). No flips (a flipped 2 is not a 2)
    and mild crops by default."""

    num_classes = 10

    def __init__(self, img_size: int = 32, val_fraction: float = 0.2, split_seed: int = 0,
                 batch_size: int = 64, num_workers: int = 0, crop_pct: float | None = 1.0,
                 scale: tuple[float, float] = (0.7, 1.0), hflip: float = 0.0,
                 color_jitter: float | None = None, auto_augment: str | None = None,
                 interpolation: str | None = "bicubic", train_interpolation: str = "bicubic",
                 re_prob: float = 0.0, **kwargs: Any):
        super().__init__(batch_size=batch_size, num_workers=num_workers, img_size=img_size, crop_pct=crop_pct,
                         scale=scale, hflip=hflip, color_jitter=color_jitter, auto_augment=auto_augment,
                         interpolation=interpolation, train_interpolation=train_interpolation,
                         re_prob=re_prob, **kwargs)
        self.val_fraction, self.split_seed = val_fraction, split_seed

    def prepare_split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train_images, train_labels, val_images, val_labels), uint8 [N, 8, 8]."""
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        x_tr, x_va, y_tr, y_va = train_test_split(images, digits.target, test_size=self.val_fraction,
                                                  random_state=self.split_seed, stratify=digits.target)
        return x_tr, y_tr, x_va, y_va

    def setup(self, stage: str) -> None:
        x_tr, y_tr, x_va, y_va = self.prepare_split()
        if stage == "fit":
            self.train_set = _ArrayDataset(x_tr, y_tr, self.transforms(True))
        self.val_set = _ArrayDataset(x_va, y_va, self.transforms(False))
