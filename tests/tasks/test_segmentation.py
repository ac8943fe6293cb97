"""Segmentation task: the official BEVANet objective's parts, boundary labels, the datamodules and
a short `foveal fit` of BEVANet-S on the offline digits segmentation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo  # noqa: F401  (registers the BEVANet names)

from tasks.segmentation import SemanticSegmenter, balanced_bce, bevanet_loss, ohem_cross_entropy
from tasks.segmentation_data import CITYSCAPES_CLASS_WEIGHTS, DigitsSegmentationDataModule, boundary_targets


def _case(seed: int = 0, k: int = 5):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 6, 7, generator=gen) * 3
    target = torch.randint(0, k, (2, 6, 7), generator=gen)
    target[0, :2] = 255
    return logits, target


def test_ohem_keeps_the_hard_pixels():
    logits, target = _case()
    valid = target != 255
    losses = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[valid]
    prob = logits.softmax(1).gather(1, target.clamp(max=4)[:, None])[:, 0][valid]
    # threshold above every probability and min_kept past the end: plain mean CE of labelled pixels
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=1.01, min_kept=10**6), losses.mean())
    # thresh 0: the pixels below the min_kept-th smallest probability, i.e. the min_kept hardest
    for kept in (1, 5, 17):
        hardest = prob.argsort()[:kept]
        torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=0.0, min_kept=kept),
                                   losses[hardest].mean())
    # thresh 0.5 with a small min_kept: every pixel whose true class has p < 0.5
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=0.5, min_kept=1), losses[prob < 0.5].mean())
    weight = torch.rand(5) + 0.5
    weighted = F.cross_entropy(logits, target, weight=weight, ignore_index=255, reduction="none")[valid]
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=1.01, min_kept=10**6, weight=weight),
                               weighted.mean())
    # nothing labelled, or no hard pixel: 0, not NaN, and still differentiable
    logits.requires_grad_(True)
    none = ohem_cross_entropy(logits, torch.full_like(target, 255))
    easy = ohem_cross_entropy(logits, target, thresh=0.0, min_kept=0)
    assert none.item() == 0.0 and easy.item() == 0.0
    (none + easy).backward()


def test_balanced_bce_weights_each_side_by_the_other():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 5, 6, generator=gen)
    target = (torch.rand(2, 5, 6, generator=gen) > 0.8).float()
    pos = target.flatten() >= 0.5
    n, n_pos = target.numel(), pos.sum()
    w = torch.where(pos, (n - n_pos) / n, n_pos / n)
    expected = (w * F.binary_cross_entropy_with_logits(logits.flatten(), target.flatten(), reduction="none")).mean()
    torch.testing.assert_close(balanced_bce(logits, target), expected)


def test_bevanet_loss_parts():
    """Upsampled heads; 0.4 CE(aux) + OHEM(main) + 20 BCE(boundary) + OHEM(main on confident
    boundary pixels); a boundary head that is confident nowhere leaves the last term at 0."""
    gen = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (2, 16, 16), generator=gen)
    edges = boundary_targets(labels, border=0)
    ds, main = torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 4, 4, 4, generator=gen)
    bd = torch.full((2, 1, 4, 4), -5.0)
    total, parts = bevanet_loss([ds, main, bd], labels, edges, ohem_min_kept=10**6, ohem_thresh=1.01)
    up = [F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=True) for t in (ds, main, bd)]
    sem = 0.4 * F.cross_entropy(up[0], labels) + F.cross_entropy(up[1], labels)
    torch.testing.assert_close(parts["sem"], sem)
    torch.testing.assert_close(parts["boundary"], 20 * balanced_bce(up[2], edges))
    assert parts["sb"].item() == 0.0
    torch.testing.assert_close(total, parts["sem"] + parts["boundary"])
    _, confident = bevanet_loss([ds, main, -bd], labels, edges, ohem_min_kept=10**6, ohem_thresh=1.01)
    torch.testing.assert_close(confident["sb"], F.cross_entropy(up[1], labels))


def test_boundary_targets():
    lab = torch.zeros(2, 24, 24, dtype=torch.long)
    lab[:, :, 12:] = 3
    lab[1, 18:, :] = 255   # an ignored region has its own boundary
    edge = boundary_targets(lab)
    assert edge[0, 10, 9:13].tolist() == [0, 1, 1, 1] and edge[0, 10, 13].item() == 1 and edge[0, 10, 14] == 0
    assert edge[0, :, :9].sum() == 0 and edge[0, :, 15:].sum() == 0
    assert edge[0, :4].sum() == 0 and edge[0, -4:].sum() == 0          # the image border is dropped
    assert edge[1, 17, 8].item() == 1                                    # the ignored region's edge
    assert edge.shape == lab.shape and set(edge.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(boundary_targets(lab[0]), edge[0])


def test_digits_segmentation_data():
    dm = DigitsSegmentationDataModule(img_size=32, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 1797 and len(dm.val_set) == 360
    x, y, b = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.shape == b.shape == (4, 32, 32) and y.dtype == torch.int64
    assert 0 < (y > 0).float().mean() < 0.6 and y.max() <= 10
    images, labels = dm.arrays()   # the labels are the ink of real digits: the bright pixels
    assert images[:, 0][labels > 0].mean() > images[:, 0][labels == 0].mean() + 1.0


def test_segmenter_arguments_are_checked():
    with pytest.raises(ValueError, match="loss"):
        SemanticSegmenter("bevanet_s", loss="dice")
    with pytest.raises(ValueError, match="class_weights"):
        SemanticSegmenter("bevanet_s", class_weights=CITYSCAPES_CLASS_WEIGHTS[:5])
    with pytest.raises(ValueError, match="forward_aux"):
        SemanticSegmenter("resnet18", loss="bevanet")


def test_fit_validate_predict_bevanet_on_digits(tmp_path, monkeypatch):
    """`foveal fit` with the quickstart config for a few steps, then `foveal validate` and `foveal
    predict` from its checkpoint: finite losses, the poly schedule decaying, mIoU and pixel accuracy
    in [0, 1], one PNG class map per validation image."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from tasks.cli import main

    config = str(Path("configs/segmentation/quickstart_digits.yaml").resolve())
    monkeypatch.chdir(tmp_path)   # the config writes runs/seg_quickstart/... relative to the cwd
    root = tmp_path / "runs" / "seg_quickstart"
    small = ["--data.init_args.batch_size", "4", "--trainer.limit_val_batches", "2"]
    main(["fit", "-c", config, *small, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
          "--trainer.log_every_n_steps", "1"])
    metrics = (root / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    rows = [dict(zip(header, r.split(","))) for r in metrics[1:]]
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == pytest.approx(0.01)
    miou = [float(r["val/miou"]) for r in rows if r.get("val/miou")]
    acc = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert miou and 0.0 <= miou[-1] <= 1.0 and 0.0 <= acc[-1] <= 1.0
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    ckpt = str(root / "checkpoints" / "last.ckpt")
    main(["validate", "-c", config, *small, "--ckpt_path", ckpt])
    main(["predict", "-c", config, "--data.init_args.batch_size", "4", "--trainer.limit_predict_batches", "2",
          "--ckpt_path", ckpt])
    maps = sorted((root / "predictions").glob("*.png"))
    assert [p.name for p in maps] == [f"{i:06d}.png" for i in range(8)]
    labels = np.asarray(Image.open(maps[0]))
    assert labels.shape == (64, 64) and labels.max() <= 10


@pytest.mark.parametrize("config", sorted(__import__("pathlib").Path("configs/segmentation").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_segmentation_configs_parse(config, capsys):
    """Every segmentation recipe parses through LightningCLI and names a registered model whose
    class count matches its data (the Cityscapes recipes: 19 classes and their weights)."""
    import timm
    import yaml

    from tasks.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    parsed = yaml.safe_load(capsys.readouterr().out)
    model = parsed["model"]["init_args"]
    assert timm.is_model(model["model_name"])
    if "cityscapes" in config.name:
        assert model["num_classes"] == 19 and model["class_weights"] == CITYSCAPES_CLASS_WEIGHTS
        assert config.stem == f"{model['model_name']}_cityscapes"


def test_cityscapes_datamodule_reads_torchvision_layout(tmp_path):
    """Two tiny images in Cityscapes' folder layout: label ids map to the 19 train ids (others to
    255), training samples are scaled, padded and cropped to the crop size, validation stays whole."""
    import numpy as np
    from PIL import Image

    from tasks.segmentation_data import CityscapesDataModule

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        img_dir, gt_dir = tmp_path / "leftImg8bit" / split / "aachen", tmp_path / "gtFine" / split / "aachen"
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        for i in range(2):
            stem = f"aachen_00000{i}_000019"
            Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
            ids = np.full((32, 64), 7, np.uint8)          # road (train id 0)
            ids[:, 32:] = 26                              # car (13)
            ids[:4] = 3                                   # out of roi (ignored)
            Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
    dm = CityscapesDataModule(str(tmp_path), batch_size=2, num_workers=0, crop_size=(32, 48), base_size=64,
                              scale_factor=16, pin_memory=False)
    dm.setup("fit")
    x, y, b = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 48) and y.shape == b.shape == (2, 32, 48)
    assert set(y.unique().tolist()) <= {0, 13, 255}
    xv, yv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (1, 3, 32, 64)
    assert (yv[0, 4:, :32] == 0).all() and (yv[0, 4:, 32:] == 13).all() and (yv[0, :4] == 255).all()


def test_segmenter_loads_an_official_release(tmp_path):
    """``pretrained_file`` + ``pretrained_tag``: a released fine-tuned file (``model.`` keys and the
    loss's class weights) initialises the network, as `foveal validate` of a release uses it."""
    import timm

    reference = timm.create_model("bevanet_s", use_kernels=False)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    path = tmp_path / "BEVANet_S_VAL_Cityscapes.pt"
    torch.save({**{f"model.{k}": v for k, v in reference.state_dict().items()},
                "sem_loss.criterion.weight": torch.ones(19)}, path)
    module = SemanticSegmenter("bevanet_s", pretrained_file=str(path), pretrained_tag="cityscapes",
                               model_kwargs={"use_kernels": False})
    for k, v in reference.state_dict().items():
        assert torch.equal(module.model.state_dict()[k], v), k
