"""VAN b0-b6: parameter counts, official checkpoint layout, kernel switch, features_only."""
from __future__ import annotations

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers van_b0..van_b6)
from zoo.van import LKA, Attention, DWConv, Mlp, pointwise

PARAMS_M = {"van_b0": 4.11, "van_b1": 13.86, "van_b2": 26.58, "van_b3": 44.77, "van_b4": 60.28,
            "van_b5": 89.97, "van_b6": 199.83}


def _meta_model(name: str, **kwargs):
    with torch.device("meta"):  # no allocation: b6 has 200M parameters
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_param_count(name):
    assert name in timm.list_models("van_*")
    n = sum(p.numel() for p in _meta_model(name).parameters())
    assert round(n / 1e6, 2) == PARAMS_M[name]


def _official_state_dict(model: torch.nn.Module, gen: torch.Generator) -> dict:
    """Random tensors under the official key names (taken from the official layout, asserted below)."""
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def test_official_key_layout():
    keys = set(_meta_model("van_b0").state_dict())
    for k in ["patch_embed1.proj.weight", "patch_embed1.norm.running_mean", "block1.0.layer_scale_1",
              "block1.0.layer_scale_2", "block1.0.norm1.weight", "block1.0.attn.proj_1.weight",
              "block1.0.attn.spatial_gating_unit.conv0.weight",
              "block1.0.attn.spatial_gating_unit.conv_spatial.bias",
              "block1.0.attn.spatial_gating_unit.conv1.weight", "block1.0.attn.proj_2.bias",
              "block1.0.mlp.fc1.weight", "block1.0.mlp.dwconv.dwconv.weight", "block1.0.mlp.fc2.bias",
              "norm1.weight", "norm4.bias", "head.weight", "block4.1.norm2.num_batches_tracked"]:
        assert k in keys, k


@pytest.mark.parametrize("name", ["van_b0", "van_b1", "van_b2", "van_b3", "van_b4", "van_b5", "van_b6"])
def test_official_checkpoint_loads(name, tmp_path):
    """A {'state_dict': sd} file in the official layout loads with no missing/unexpected keys."""
    if name in ("van_b4", "van_b5", "van_b6"):  # big: check the key sets on meta, load one small one for real
        keys = set(_meta_model(name).state_dict())
        from zoo.van import checkpoint_filter_fn
        sd = {"state_dict": {f"module.{k}": None for k in keys}}
        assert set(checkpoint_filter_fn(sd, None)) == keys
        return
    gen = torch.Generator().manual_seed(0)
    sd = _official_state_dict(timm.create_model(name), gen)
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"state_dict": sd, "epoch": 300}, path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    for k in ("head.weight", "block1.0.attn.spatial_gating_unit.conv_spatial.weight", "norm4.bias"):
        torch.testing.assert_close(loaded[k], sd[k])
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
    assert model.pretrained_cfg["crop_pct"] == 0.9 and model.pretrained_cfg["interpolation"] == "bicubic"


def test_pretrained_cfgs_name_official_files():
    cfg = timm.models.get_pretrained_cfg("van_b0.in1k")
    assert cfg.hf_hub_id == "Visual-Attention-Network/VAN-Tiny-original"
    assert cfg.hf_hub_filename == "van_tiny_754.pth.tar"
    assert timm.models.get_pretrained_cfg("van_b3.in1k").hf_hub_filename == "van_large_839.pth.tar"


@pytest.mark.kernel
def test_use_kernels_matches_reference(device, monkeypatch):
    """Logits with the fused LKA kernels equal the plain PyTorch path (fp32, eval mode)."""
    # full fp32 on both paths: cuDNN convolutions default to TF32 on CUDA, matmuls (the fast path) do not
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = timm.create_model("van_b0", num_classes=10).to(device).eval()
    for m in model.modules():  # random BN stats and layer scales so every path matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if hasattr(m, "layer_scale_1"):
            m.layer_scale_1.data.uniform_(0.5, 1.0)
            m.layer_scale_2.data.uniform_(0.5, 1.0)
    x = torch.randn(1, 3, 64, 64, device=device)
    for fmt in (torch.contiguous_format, torch.channels_last):  # channels-last: 1x1 convs as matmuls
        model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        with torch.no_grad():
            model.set_use_kernels(True)
            assert all(m.use_kernels for m in model.modules() if isinstance(m, (LKA, Attention, Mlp, DWConv)))
            fused = model(x)
            model.set_use_kernels(False)
            assert not any(m.use_kernels for m in model.modules() if isinstance(m, (LKA, Attention, Mlp, DWConv)))
            plain = model(x)
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)
        assert fused.shape == (1, 10)


@pytest.mark.kernel
@pytest.mark.parametrize("hw", [(28, 29), (9, 7)])
def test_mlp_dwconv_kernel_path_matches_conv(device, hw, monkeypatch):
    """The MLP's depthwise 3x3 on the kernel path (eager: Triton on maps of 28x28 and more, and
    whenever no gradient is needed; cuDNN below that in training and under torch.compile): same
    output and gradients as the conv, and the rule picks the path it states."""
    import ops
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    m = DWConv(8).to(device)
    x = torch.randn(2, 8, *hw, device=device).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 8, *hw, device=device)
    calls = []
    real = ops.depthwise_conv2d
    monkeypatch.setattr(ops, "depthwise_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    for use_kernels in (True, False):
        m.use_kernels = use_kernels
        m.zero_grad()
        xi = x.detach().clone().requires_grad_(True)
        y = m(xi)
        y.backward(g)
        results.append((y.detach(), xi.grad, m.dwconv.weight.grad.clone(), m.dwconv.bias.grad.clone()))
    assert len(calls) == (1 if hw[0] * hw[1] >= 28 * 28 else 0)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    m.use_kernels = True
    with torch.no_grad():   # inference takes the Triton kernels on every map
        torch.testing.assert_close(m(x), results[1][0], rtol=1e-4, atol=1e-4)
    assert len(calls) == (2 if hw[0] * hw[1] >= 28 * 28 else 1)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)   # compiled: cuDNN's conv
    with torch.no_grad():
        torch.testing.assert_close(m(x), results[1][0], rtol=1e-4, atol=1e-4)
    assert len(calls) == (2 if hw[0] * hw[1] >= 28 * 28 else 1)


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_as_matmul_matches_conv(bias):
    """A 1x1 conv of a channels-last map run as F.linear: same output (channels-last), same
    gradients of input, weight and bias; NCHW input falls back to the conv."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 20, 1, bias=bias).double()
    x = torch.randn(2, 12, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 20, 5, 7, dtype=torch.float64)
    outs = []
    for as_matmul in (True, False):
        xi = x.detach().clone().requires_grad_(True)
        conv.zero_grad()
        y = pointwise(conv, xi, as_matmul)
        y.backward(g)
        outs.append((y.detach(), xi.grad, conv.weight.grad.clone(), conv.bias.grad.clone() if bias else None))
    fast, ref = outs
    assert fast[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(fast, ref):
        if b is not None:
            torch.testing.assert_close(a, b)
    nchw = x.contiguous()
    torch.testing.assert_close(pointwise(conv, nchw, True), conv(nchw))


def test_features_only():
    model = timm.create_model("van_b0", features_only=True, use_kernels=False).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [32, 64, 160, 256]
    feats = model(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 160, 4, 4), (1, 256, 2, 2)]
    sub = timm.create_model("van_b0", features_only=True, out_indices=(1, 3), use_kernels=False)
    assert [f.shape[1] for f in sub(torch.randn(1, 3, 64, 64))] == [64, 256]


def test_forward_head_and_reset_classifier():
    model = timm.create_model("van_b0", use_kernels=False).eval()
    x = torch.randn(1, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (1, 4, 256)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 256)
    model.reset_classifier(5)
    assert model(x).shape == (1, 5)
    final, inter = model.forward_intermediates(x, indices=2)
    assert [t.shape[1] for t in inter] == [160, 256] and final.shape == (1, 4, 256)
