"""Segmentation datamodules: Cityscapes (torchvision's reader, the official BEVANet/PIDNet
augmentation) and scikit-learn's digits as a small offline segmentation task.

Batches are ``(images [B, 3, H, W] float, labels [B, H, W] int64, boundaries [B, H, W] float)``;
boundary labels mark class transitions, as the official training data does (its Canny edges of the
label map, dilated by a 4x4 box; here the transitions themselves, dilated the same way).
"""
from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset

__all__ = ["CityscapesDataModule", "DigitsSegmentationDataModule", "boundary_targets", "CITYSCAPES_CLASS_WEIGHTS"]

# The official Cityscapes class weights (BEVANet / PIDNet ``datasets/cityscapes.py``), train-id order.
CITYSCAPES_CLASS_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                            0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507]
# Cityscapes label id -> train id (19 classes), the rest ignored.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                         25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def boundary_targets(labels: torch.Tensor, dilate: int = 4, border: int = 6) -> torch.Tensor:
    """Boundary labels [H, W] (or [B, H, W]) in {0, 1}: pixels where the label changes to the right
    or below, dilated by a ``dilate`` x ``dilate`` box; transitions within ``border`` pixels of the
    image edge are dropped, as the official edge maps do."""
    lab = labels if labels.dim() == 3 else labels[None]
    edge = torch.zeros(lab.shape, dtype=torch.float32)
    edge[:, :, :-1] += (lab[:, :, 1:] != lab[:, :, :-1]).float()
    edge[:, :-1, :] += (lab[:, 1:, :] != lab[:, :-1, :]).float()
    edge = (edge > 0).float()
    if border:
        inner = torch.zeros_like(edge)
        inner[:, border:-border, border:-border] = 1
        edge = edge * inner
    if dilate > 1:   # a box of dilate x dilate, anchored as cv2.dilate's default (centre (k//2, k//2))
        lo, hi = dilate // 2, dilate - 1 - dilate // 2
        edge = F.max_pool2d(F.pad(edge[:, None], (lo, hi, lo, hi)), dilate, stride=1)[:, 0]
    return edge if labels.dim() == 3 else edge[0]


def _normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> float, ImageNet mean/std (the official input transform)."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (image.float() / 255.0 - mean) / std


class _CityscapesSegmentation(Dataset):
    """torchvision's Cityscapes reader + the official augmentation: random scale (long side
    ``base_size * (0.5 + randint(0, scale_factor) / 10)``), pad (image 0, label ignored) and random
    crop to ``crop_size``, random horizontal flip; evaluation images stay whole."""

    def __init__(self, root: str, split: str, train: bool, crop_size: tuple[int, int], base_size: int,
                 scale_factor: int, ignore_index: int):
        from torchvision.datasets import Cityscapes

        self.data = Cityscapes(root, split=split, mode="fine", target_type="semantic")
        self.train, self.crop, self.base, self.factor, self.ignore = train, crop_size, base_size, scale_factor, ignore_index
        lut = torch.full((256,), ignore_index, dtype=torch.int64)
        for label_id, train_id in _CITYSCAPES_TRAIN_IDS.items():
            lut[label_id] = train_id
        self.lut = lut

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        image, target = self.data[i]
        img = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1).contiguous()
        lab = self.lut[torch.from_numpy(np.asarray(target, dtype=np.uint8)).long()]
        if self.train:
            img, lab = self._augment(img, lab)
        return _normalize(img), lab, boundary_targets(lab)

    def _augment(self, img: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = lab.shape
        long_side = int(self.base * (0.5 + random.randint(0, self.factor) / 10.0) + 0.5)
        nh, nw = (long_side, int(w * long_side / h + 0.5)) if h > w else (int(h * long_side / w + 0.5), long_side)
        img = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
        lab = F.interpolate(lab[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        ch, cw = self.crop
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            img = F.pad(img, (0, pw, 0, ph), value=0.0)
            lab = F.pad(lab, (0, pw, 0, ph), value=self.ignore)
        y, x = random.randint(0, lab.shape[0] - ch), random.randint(0, lab.shape[1] - cw)
        img, lab = img[:, y:y + ch, x:x + cw], lab[y:y + ch, x:x + cw]
        if random.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        return img.clamp(0, 255), lab


class _SegmentationLoaders(LightningDataModule):
    def __init__(self, batch_size: int, num_workers: int, val_batch_size: int | None = None,
                 pin_memory: bool = True):
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_batch_size = val_batch_size or batch_size
        self.pin_memory = pin_memory

    def _loader(self, dataset, train: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size if train else self.val_batch_size, shuffle=train,
                          drop_last=train, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)


class CityscapesDataModule(_SegmentationLoaders):
    """Cityscapes fine annotations in torchvision's layout (``root/leftImg8bit/{train,val}``,
    ``root/gtFine/{train,val}``), 19 train classes, the official augmentation (crop 1024x1024 from a
    base size of 2048, scale factor 16, flips); validation at the full 2048x1024.
    ``batch_size`` is per device (the official recipes: 12 in total)."""

    num_classes = 19

    def __init__(self, root: str, batch_size: int = 6, num_workers: int = 8, val_batch_size: int = 1,
                 crop_size: tuple[int, int] = (1024, 1024), base_size: int = 2048, scale_factor: int = 16,
                 ignore_index: int = 255, **kwargs: Any):
        super().__init__(batch_size, num_workers, val_batch_size, **kwargs)
        self.root, self.crop_size, self.base_size = root, tuple(crop_size), base_size
        self.scale_factor, self.ignore_index = scale_factor, ignore_index

    def setup(self, stage: str) -> None:
        common = dict(crop_size=self.crop_size, base_size=self.base_size, scale_factor=self.scale_factor,
                      ignore_index=self.ignore_index)
        if stage == "fit":
            self.train_set = _CityscapesSegmentation(self.root, "train", True, **common)
        self.val_set = _CityscapesSegmentation(self.root, "val", False, **common)


class _ArraySegmentation(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.boundaries = boundary_targets(labels, border=0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], self.boundaries[i]


@functools.lru_cache(maxsize=1)
def _digits():
    """scikit-learn's digits (read once: ``arrays`` and the stratified split both need them)."""
    from sklearn.datasets import load_digits

    return load_digits()


class DigitsSegmentationDataModule(_SegmentationLoaders):
    """scikit-learn's digits as a segmentation task, offline: each 8x8 digit (upsampled to
    ``img_size``, bilinear) labels its ink pixels (intensity above ``ink``, of 16) with its digit
    + 1 and the rest 0 (background): 11 classes. Stratified ``val_fraction`` split by ``split_seed``."""

    num_classes = 11

    def __init__(self, img_size: int = 64, val_fraction: float = 0.2, split_seed: int = 0, ink: float = 4.0,
                 batch_size: int = 16, num_workers: int = 0, **kwargs: Any):
        super().__init__(batch_size, num_workers, pin_memory=False, **kwargs)
        self.img_size, self.val_fraction, self.split_seed, self.ink = img_size, val_fraction, split_seed, ink

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [N, 3, S, S] normalised, labels [N, S, S] int64) for all 1,797 digits."""
        digits = _digits()
        x = F.interpolate(torch.tensor(digits.images, dtype=torch.float32)[:, None], size=self.img_size,
                          mode="bilinear", align_corners=False)[:, 0]
        labels = torch.where(x > self.ink, torch.tensor(digits.target)[:, None, None] + 1, 0)
        images = _normalize((x / 16.0 * 255.0).clamp(0, 255)[:, None].expand(-1, 3, -1, -1))
        return images.contiguous(), labels.long()

    def setup(self, stage: str) -> None:
        from sklearn.model_selection import train_test_split

        images, labels = self.arrays()
        idx = np.arange(len(labels))
        tr, va = train_test_split(idx, test_size=self.val_fraction, random_state=self.split_seed,
                                  stratify=_digits().target)
        if stage == "fit":
            self.train_set = _ArraySegmentation(images[tr], labels[tr])
        self.val_set = _ArraySegmentation(images[va], labels[va])
