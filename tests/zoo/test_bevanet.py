"""BEVANet: parameter counts, official checkpoint layouts, kernel switch, outputs."""
from __future__ import annotations

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers bevanet_s, bevanet, bevanet_sw, bevanet_l)
from zoo.bevanet import LSKA, DepthwiseConv, checkpoint_filter_fn

# (with the two training heads, without): the official configs built with the official code
PARAMS_M = {"bevanet_s": (15.19, 15.09), "bevanet": (58.82, 58.60), "bevanet_sw": (57.64, 57.42),
            "bevanet_l": (60.20, 59.83)}


def _meta_model(name: str, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_param_count(name):
    assert name in timm.list_models("bevanet*")
    for aux, expected in zip((True, False), PARAMS_M[name]):
        n = sum(p.numel() for p in _meta_model(name, aux_heads=aux).parameters())
        assert round(n / 1e6, 2) == expected


def test_official_key_layout():
    keys = set(_meta_model("bevanet_s").state_dict())
    sga = "layer4_semantic_1.attn.spatial_gating_unit"
    expected = [
        "conv1.0.weight", "conv1.4.running_var", "layer1.1.bn2.weight", "layer2.0.downsample.0.weight",
        "layer3_semantic.2.conv2.weight", "layer4_down_semantic.0.downsample.1.bias",
        f"{sga}.DW_conv.dwconv.weight", f"{sga}.DW_D_conv_h.dwconv.bias", f"{sga}.DW_D_conv_v.dwconv.weight",
        f"{sga}.pwconv.pwconv.weight", f"{sga}.FS_kernel.fc_reduce.0.pwconv.weight",
        f"{sga}.FS_kernel.fc_reduce.1.dwconv.weight", f"{sga}.FS_kernel.fc_expand_big_v.2.running_mean",
        f"{sga}.FS_kernel.conv_squeeze.bias", "layer4_semantic_1.attn.proj_1.pwconv.weight",
        "layer4_semantic_1.mlp.fc1.pwconv.weight", "layer4_semantic_1.mlp.dwconv.dwconv.weight",
        "layer4_semantic_1.mlp.fc2.pwconv.bias", "layer4_semantic_2.layer_scale_2", "norm4_semantic_2.weight",
        "layer3_detail.1.bn1.weight", "compression3.1.weight", "fuse_sd_3.f_x.0.weight", "fuse_sd_4.f_y.1.bias",
        "layer4_detail_conv.0.conv1.weight", "layer4_detail.attn.spatial_gating_unit.DW_D_conv_h.dwconv.weight",
        "norm4_detail.bias", "layer5_detail_semantic.0.conv3.weight", "layer5_detail_semantic.0.downsample.0.weight",
        "layer5_down_semantic_seg.0.conv1.weight", "layer5_semantic_2_seg.norm2.weight", "norm5_semantic_1_seg.weight",
        "layer5_detail_boundary.0.bn3.weight", "spp.scale1.1.weight", "spp.scale1.3.pwconv.weight",
        "spp.scale5.3.pwconv.weight", "spp.scale0.2.pwconv.weight", "spp.bn.running_mean", "spp.layer_scale_lska",
        "spp.lska.proj_1.pwconv.bias", "spp.lska.spatial_gating_unit.DW_conv_h.dwconv.weight",
        "spp.lska.spatial_gating_unit.DW_D_conv_v.dwconv.weight", "spp.lska.spatial_gating_unit.pwconv.pwconv.weight",
        "spp.process1.2.weight", "spp.process_lska.0.weight", "spp.process5.2.weight", "spp.compression.2.pwconv.weight",
        "spp.shortcut.0.weight", "dfm.conv_p.0.weight", "dfm.conv_i.2.weight", "dfm.out.2.weight",
        "seghead_ds.conv2.bias", "seghead_db.conv2.weight", "head.bn1.weight", "head.conv1.weight", "head.bn2.bias",
        "head.conv2.weight"]
    assert [k for k in expected if k not in keys] == []
    model = _meta_model("bevanet_s")
    sd = model.state_dict()
    assert sd[f"{sga}.DW_D_conv_h.dwconv.weight"].shape == (256, 1, 1, 11)           # kernel 35: K' = 11
    assert sd["layer4_detail.attn.spatial_gating_unit.DW_D_conv_v.dwconv.weight"].shape == (64, 1, 7, 1)  # 23: 7
    assert sd["spp.lska.spatial_gating_unit.DW_D_conv_h.dwconv.weight"].shape == (96, 1, 1, 11)
    assert sd[f"{sga}.FS_kernel.fc_reduce.0.pwconv.weight"].shape == (32, 256, 1, 1)  # max(C/16, 32)
    assert sd[f"{sga}.FS_kernel.conv_squeeze.weight"].shape == (3, 2, 7, 7)
    assert sd["seghead_db.conv2.weight"].shape == (1, 32, 1, 1) and sd["head.conv2.weight"].shape == (19, 128, 1, 1)


def _random_state_dict(model: torch.nn.Module, gen: torch.Generator) -> dict:
    return {k: (torch.rand(v.shape, generator=gen) + 0.5 if k.endswith("running_var")
                else torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def test_official_finetuned_checkpoint_loads(tmp_path):
    """A released fine-tuned file (``FullModel.state_dict()``: ``model.``-prefixed keys plus the loss's
    class weights) loads through timm with every tensor in place; without the training heads too."""
    gen = torch.Generator().manual_seed(0)
    sd = _random_state_dict(timm.create_model("bevanet_s", use_kernels=False), gen)
    path = tmp_path / "BEVANet_S_VAL_Cityscapes.pt"
    torch.save({**{f"model.{k}": v for k, v in sd.items()}, "sem_loss.criterion.weight": torch.ones(19)}, path)
    for aux in (True, False):
        model = timm.create_model("bevanet_s", pretrained=True, aux_heads=aux,
                                  pretrained_cfg_overlay=dict(file=str(path)))
        loaded = model.state_dict()
        assert set(loaded) == {k for k in sd if aux or not k.startswith(("seghead_ds.", "seghead_db."))}
        for k, v in loaded.items():
            torch.testing.assert_close(v, sd[k], msg=k)
    assert model.pretrained_cfg["input_size"] == (3, 1024, 2048) and model.num_classes == 19
    camvid = _meta_model("bevanet_s.camvid")
    assert camvid.num_classes == 11 and camvid.pretrained_cfg["input_size"] == (3, 720, 960)
    assert _meta_model("bevanet.ade20k").num_classes == 150


def test_imagenet_checkpoint_loads_the_backbone(tmp_path):
    """The ImageNet releases hold the classification network (``{'state_dict': ...}``, here with
    ``module.``): its backbone loads by name and shape, its classification stage and linear head
    are left out, and the segmentation-only modules keep their initialisation."""
    gen = torch.Generator().manual_seed(1)
    fresh = timm.create_model("bevanet_s", use_kernels=False).state_dict()
    backbone = {k: v for k, v in _random_state_dict(timm.create_model("bevanet_s", use_kernels=False), gen).items()
                if k.split(".")[0] in ("conv1", "layer1", "layer2", "layer3_semantic", "layer4_semantic_1",
                                       "compression3", "fuse_sd_3", "layer5_detail_semantic")}
    cls_only = {"layer5_down_semantic_cls.0.conv1.weight": torch.randn(256, 256, 1, 1),
                "last_layer.0.weight": torch.randn(2048, 512, 1, 1), "head.weight": torch.randn(1000, 2048),
                "head.bias": torch.randn(1000), "layer5_down.0.weight": torch.randn(256, 128, 3, 3)}
    path = tmp_path / "BEVANet_S_ImageNet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in {**backbone, **cls_only}.items()}}, path)
    model = timm.create_model("bevanet_s.in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    loaded = model.state_dict()
    for k, v in backbone.items():
        torch.testing.assert_close(loaded[k], v, msg=k)
    torch.testing.assert_close(loaded["spp.bn.running_var"], fresh["spp.bn.running_var"])
    assert loaded["head.conv2.weight"].shape == (19, 128, 1, 1)
    kept = checkpoint_filter_fn({"state_dict": {f"module.{k}": v for k, v in cls_only.items()}}, model)
    assert kept == {}


@pytest.mark.kernel
def test_use_kernels_matches_reference(device, monkeypatch):
    """Logits and every parameter's gradient with the Triton depthwise and LSKA kernels equal the
    plain PyTorch path (fp32). Eval mode, random BN
    statistics: in train mode BatchNorm over the 1x1 pooled maps inside CKS (two items) amplifies
    fp32 rounding to ~1e-2 of the gradients, as between the official code's fp32 and fp64 runs."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = timm.create_model("bevanet_s", num_classes=5).to(device).eval()
    for m in model.modules():  # layer scales of 1e-2 would hide the attention branches
        for name in ("layer_scale_1", "layer_scale_2", "layer_scale_lska"):
            if hasattr(m, name):
                getattr(m, name).data.uniform_(0.5, 1.0)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 128, device=device).contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    results = []
    for enable in (True, False):
        model.set_use_kernels(enable)
        assert all(m.use_kernels == (enable and (not isinstance(m, DepthwiseConv) or m.triton))
                   for m in model.modules() if isinstance(m, (DepthwiseConv, LSKA)))
        model.zero_grad()
        outs = model.forward_aux(x)
        sum(o.pow(2).mean() for o in outs).backward()
        results.append(([o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fused, fused_grads), (plain, plain_grads) = results
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for n, g in plain_grads.items():
        torch.testing.assert_close(fused_grads[n], g, rtol=1e-3, atol=1e-3 * g.abs().max().item() + 1e-8, msg=n)


def test_outputs_and_classifier():
    model = timm.create_model("bevanet_s", use_kernels=False).eval()
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        logits = model(x)
        ds, main, boundary = model.forward_aux(x)
        full = model.segment(x)
    assert logits.shape == main.shape == ds.shape == (1, 19, 16, 24) and boundary.shape == (1, 1, 16, 24)
    torch.testing.assert_close(logits, main)
    assert full.shape == (1, 19, 128, 192)
    torch.testing.assert_close(full[..., 0, 0], logits[..., 0, 0])   # align_corners=True keeps the corners
    model.reset_classifier(4)
    assert model(x).shape == (1, 4, 16, 24) and model.forward_aux(x)[0].shape[1] == 4
    assert model.get_classifier() is model.head.conv2
    deploy = timm.create_model("bevanet_s", aux_heads=False, use_kernels=False)
    with pytest.raises(RuntimeError, match="aux_heads"):
        deploy.forward_aux(x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="features_only"):
        timm.create_model("bevanet_s", features_only=True)
    with pytest.raises(ValueError, match="kernel_size"):
        timm.create_model("bevanet_s", semantic_kernel_size=31)


@pytest.mark.kernel
def test_kernel_blocks_compile_without_graph_breaks(device, monkeypatch):
    """An EVA block (SDLSKA on ``ops.depthwise_conv2d``) and DLKPPM (the fused LSKA chain) trace
    with ``torch.compile(fullgraph=True)``, forward and backward, and match eager. cuDNN's convs run
    in full fp32 here: in TF32 the compiled and eager calls may pick algorithms that differ by
    ~1e-4 (one element of 32768 did on the H200)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = timm.create_model("bevanet_s").to(device)
    for block, shape in ((model.layer4_detail, (2, 64, 16, 16)), (model.spp, (2, 512, 8, 8))):
        x = torch.randn(shape, device=device, requires_grad=True)
        compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
        out = compiled(x)
        out.square().mean().backward()
        grad, x.grad = x.grad, None
        ref = block(x)
        ref.square().mean().backward()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-6)
