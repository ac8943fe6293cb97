"""BiFormer: official layout and parameter counts, loading releases (model, not EMA), kernel
switch agreement, features_only at classification and segmentation sizes."""
from __future__ import annotations

import argparse

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers the models)

VARIANTS = {  # name: (dims, depths, params in millions from the official code)
    "biformer_tiny": ((64, 128, 256, 512), (2, 2, 8, 2), 13.14),
    "biformer_small": ((64, 128, 256, 512), (4, 4, 18, 4), 25.54),
    "biformer_base": ((96, 192, 384, 768), (4, 4, 18, 4), 56.80),
}


def official_keys(dims, depths) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official legacy BiFormer state dict, written out from its structure."""
    keys = {}

    def conv(p, cin, cout, k, groups=1):
        keys[f"{p}.weight"], keys[f"{p}.bias"] = (cout, cin // groups, k, k), (cout,)

    def bn(p, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{p}.{n}"] = (c,)
        keys[f"{p}.num_batches_tracked"] = ()

    def lin(p, cin, cout, bias=True):
        keys[f"{p}.weight"] = (cout, cin)
        if bias:
            keys[f"{p}.bias"] = (cout,)

    conv("downsample_layers.0.0", 3, dims[0] // 2, 3)
    bn("downsample_layers.0.1", dims[0] // 2)
    conv("downsample_layers.0.3", dims[0] // 2, dims[0], 3)
    bn("downsample_layers.0.4", dims[0])
    for i in range(1, 4):
        conv(f"downsample_layers.{i}.0", dims[i - 1], dims[i], 3)
        bn(f"downsample_layers.{i}.1", dims[i])
    for i, (c, d) in enumerate(zip(dims, depths)):
        for j in range(d):
            p = f"stages.{i}.{j}"
            conv(f"{p}.pos_embed", c, c, 3, groups=c)
            for n in ("norm1", "norm2"):
                keys[f"{p}.{n}.weight"], keys[f"{p}.{n}.bias"] = (c,), (c,)
            conv(f"{p}.attn.lepe", c, c, 5, groups=c)
            if i < 3:
                lin(f"{p}.attn.qkv.qkv", c, 3 * c)
                lin(f"{p}.attn.wo", c, c)
            else:
                lin(f"{p}.attn.qkv", c, 3 * c, bias=False)
                lin(f"{p}.attn.proj", c, c)
            lin(f"{p}.mlp.0", c, 3 * c)
            lin(f"{p}.mlp.3", 3 * c, c)
    bn("norm", dims[-1])
    lin("head", dims[-1], 1000)
    return keys


@pytest.mark.parametrize("name", list(VARIANTS))
def test_official_layout_and_param_count(name):
    dims, depths, millions = VARIANTS[name]
    with torch.device("meta"):
        model = timm.create_model(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_keys(dims, depths)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(n, 2) == millions, f"{name}: {n:.4f}M parameters, official {millions}M"


def test_release_file_loads_model_not_ema(tmp_path):
    """A DeiT-trainer release: {'model', 'model_ema', 'args': Namespace}; the evaluated weights
    are 'model', although timm's generic file loader would prefer the EMA entry."""
    dims, depths, _ = VARIANTS["biformer_tiny"]
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=gen) if s else torch.tensor(7) for k, s in official_keys(dims, depths).items()}
    ema = {k: v + 1 for k, v in sd.items()}
    path = tmp_path / "biformer_tiny_release.pth"
    torch.save({"model": sd, "model_ema": ema, "args": argparse.Namespace(model="biformer_tiny", lr=1e-3),
                "epoch": 299}, path)
    model = timm.create_model("biformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), f"{k} was not loaded from 'model'"
    # a different head size keeps the backbone and re-initialises the classifier
    model10 = timm.create_model("biformer_tiny", pretrained=True, num_classes=10,
                                pretrained_cfg_overlay=dict(file=str(path)))
    assert model10.head.weight.shape == (10, 512)
    assert torch.equal(model10.state_dict()["stages.2.3.attn.qkv.qkv.weight"], sd["stages.2.3.attn.qkv.qkv.weight"])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_loads_an_official_layout_file(name, tmp_path):
    """Every variant loads a ``{'model': ...}`` file in the official key layout through timm with
    no missing or unexpected keys: each loaded tensor is the file's."""
    dims, depths, _ = VARIANTS[name]
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=gen) if s else torch.tensor(7) for k, s in official_keys(dims, depths).items()}
    path = tmp_path / f"{name}.pth"
    torch.save({"model": sd}, path)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).state_dict()
    assert set(loaded) == set(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_missing_release_file_says_so(tmp_path):
    """A wrong path is reported as a missing file, not as a file to convert."""
    with pytest.raises(FileNotFoundError, match="nonexistent.pth"):
        timm.create_model("biformer_tiny", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "nonexistent.pth")))


@pytest.mark.kernel
def test_use_kernels_on_off_logits_agree():
    """Small BiFormer (auto_pad exercised: 9x9 stage-2 map with n_win=2) under the kernel and
    the official gather path: same logits."""
    torch.manual_seed(0)
    kw = dict(depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), n_win=2, topks=(1, 2, 3, -2), num_classes=10)
    model = timm.create_model("biformer_tiny", **kw).eval()
    x = torch.randn(1, 3, 72, 72)
    with torch.no_grad():
        on = model(x)
        model.set_use_kernels(False)
        off = model(x)
    assert torch.isfinite(on).all()
    assert torch.allclose(on, off, rtol=1e-4, atol=1e-4), (on - off).abs().max()


@pytest.mark.parametrize("size, n_win", [(224, 7), (512, 8)])
def test_features_only(size, n_win):
    model = timm.create_model("biformer_tiny", features_only=True, depth=(1, 1, 1, 1), n_win=n_win,
                              use_kernels=False).eval()
    assert model.feature_info.channels() == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert [tuple(f.shape) for f in feats] == [(1, c, size // r, size // r) for c, r in
                                               zip((64, 128, 256, 512), (4, 8, 16, 32))]
    assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 training step on the GPU")
def test_cuda_train_step_bf16_channels_last():
    model = timm.create_model("biformer_tiny").cuda().train()
    x = torch.randn(4, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        on = model(x[:2]).float()
        model.set_use_kernels(False)
        off = model(x[:2]).float()
    assert (on - off).norm() / off.norm() < 3e-2
