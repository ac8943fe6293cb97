"""ViG / ViG-H: official layout and parameter counts, loading releases (bare or {'model': ...}),
pos_embed resizing, features_only, the kernel switch, and the bidirectional GLA formulation
against the official batch-concat-and-flip math."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from zoo.vig import GatedLinearAttention, checkpoint_filter_fn, resize_pos_embed  # registers vig_*

PLAIN = {  # name: (dim, heads, params in millions from the official code)
    "vig_tiny": (192, 3, 5.83),
    "vig_small": (384, 6, 22.62),
    "vig_base": (768, 12, 89.02),
}
HIER = {  # name: (dims, depths, heads, params in millions)
    "vig_h_tiny": ((96, 192, 384, 768), (2, 2, 5, 2), (3, 6, 12, 24), 28.60),
    "vig_h_small": ((96, 192, 384, 768), (2, 2, 17, 2), (3, 6, 12, 24), 50.05),
    "vig_h_base": ((128, 256, 512, 1024), (2, 2, 17, 2), (4, 8, 16, 32), 88.90),
}


def _ceil_to(x: int, m: int) -> int:
    return m * -(-x // m)


def _gla_keys(keys: dict, p: str, c: int, heads: int) -> None:
    """Official GatedLinearAttention / GLA2D keys (expand_k 0.5, expand_v 1, gate rank 16)."""
    keys[f"{p}.in_proj.0.weight"] = (c, 1, 3, 3)
    keys[f"{p}.qkv_proj.weight"] = (2 * c, c)           # q: c/2, k: c/2, v: c
    keys[f"{p}.gk_proj.0.weight"] = (16, c)
    keys[f"{p}.gk_proj.1.weight"], keys[f"{p}.gk_proj.1.bias"] = (c, 16), (c,)   # fwd | bwd gates
    keys[f"{p}.o_proj.weight"] = (c, c)
    keys[f"{p}.g_norm.weight"] = keys[f"{p}.l_norm.weight"] = (c // heads,)
    keys[f"{p}.g_proj.weight"], keys[f"{p}.g_proj.bias"] = (c, c), (c,)


def plain_keys(c: int, heads: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official plain ViG state dict (configs/vig/*.yaml), written out from its structure."""
    hidden = _ceil_to(int(c * 4 * 2 / 3), 256)
    keys = {"pos_embed": (1, 196, c),
            "patch_embed.proj.0.weight": (c // 2, 3, 9, 9), "patch_embed.proj.0.bias": (c // 2,),
            "patch_embed.proj.1.weight": (c // 2,), "patch_embed.proj.1.bias": (c // 2,),
            "patch_embed.proj.3.weight": (c, c // 2, 3, 3), "patch_embed.proj.3.bias": (c,),
            "patch_embed.proj.4.weight": (c,), "patch_embed.proj.4.bias": (c,)}
    for i in range(12):
        p = f"blocks.{i}"
        keys[f"{p}.attn_norm.weight"] = keys[f"{p}.mlp_norm.weight"] = (c,)
        _gla_keys(keys, f"{p}.attn", c, heads)
        keys[f"{p}.mlp.gate_proj.weight"], keys[f"{p}.mlp.down_proj.weight"] = (2 * hidden, c), (c, hidden)
    keys["norm.weight"] = (c,)
    keys["head.weight"], keys["head.bias"] = (1000, c), (1000,)
    return keys


def hier_keys(dims, depths, heads) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ViG-H state dict (configs/vig-h/*.yaml: ln2d, patch embed v2,
    downsample v3, gMlp), written out from its structure."""
    keys = {}

    def ln(p, c):
        keys[f"{p}.weight"] = keys[f"{p}.bias"] = (c,)

    def conv(p, cin, cout):
        keys[f"{p}.weight"], keys[f"{p}.bias"] = (cout, cin, 3, 3), (cout,)

    conv("patch_embed.0", 3, dims[0] // 2)
    ln("patch_embed.2", dims[0] // 2)
    conv("patch_embed.5", dims[0] // 2, dims[0])
    ln("patch_embed.7", dims[0])
    for i, (c, d, h) in enumerate(zip(dims, depths, heads)):
        hidden = _ceil_to(int(c * 4 * 2 / 3), 32)
        for j in range(d):
            p = f"layers.{i}.blocks.{j}"
            ln(f"{p}.norm", c)
            ln(f"{p}.norm2", c)
            _gla_keys(keys, f"{p}.op", c, h)
            keys[f"{p}.mlp.fc1.weight"], keys[f"{p}.mlp.fc2.weight"] = (2 * hidden, c), (c, hidden)
        if i < 3:
            conv(f"layers.{i}.downsample.1", c, dims[i + 1])
            ln(f"layers.{i}.downsample.3", dims[i + 1])
    ln("classifier.norm", dims[-1])
    keys["classifier.head.weight"], keys["classifier.head.bias"] = (1000, dims[-1]), (1000,)
    return keys


def official_keys(name: str) -> dict[str, tuple[int, ...]]:
    return plain_keys(*PLAIN[name][:2]) if name in PLAIN else hier_keys(*HIER[name][:3])


def _random_sd(name: str, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(s, generator=gen) + (1.0 if k.endswith("norm.weight") else 0.0)
            for k, s in official_keys(name).items()}


@pytest.mark.parametrize("name", list(PLAIN) + list(HIER))
def test_official_layout_and_param_count(name):
    assert name in timm.list_models("vig_*")
    with torch.device("meta"):
        model = timm.create_model(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_keys(name)
    millions = (PLAIN.get(name) or HIER.get(name))[-1]
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(n, 2) == millions, f"{name}: {n:.4f}M parameters, official {millions}M"
    # every variant's release file (bare or wrapped) maps onto the model key for key
    sd = {f"module.{k}": torch.empty(0) for k in got}
    assert set(checkpoint_filter_fn({"model": sd}, None)) == set(got)


def test_variant_options_follow_the_official_configs():
    """ViG-T only: SiLU after the local conv and before o_proj; drop path per config; ViG-H has no SiLU."""
    t, s = timm.create_model("vig_tiny"), timm.create_model("vig_small")
    assert isinstance(t.blocks[0].attn.in_proj[1], torch.nn.SiLU) and isinstance(t.blocks[0].attn.out_act, torch.nn.SiLU)
    assert isinstance(s.blocks[0].attn.in_proj[1], torch.nn.Identity) and isinstance(s.blocks[0].attn.out_act,
                                                                                      torch.nn.Identity)
    assert isinstance(t.blocks[-1].drop_path, torch.nn.Identity)                     # ViG-T: 0.0
    assert s.blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    with torch.device("meta"):
        hb = timm.create_model("vig_h_base")
    assert hb.layers[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.6)
    assert isinstance(hb.layers[0].blocks[0].op.in_proj[1], torch.nn.Identity)
    assert t.blocks[0].attn.g_norm.eps == 1e-6 and t.norm.eps == 1e-6 and hb.layers[0].blocks[0].norm.eps == 1e-5


@pytest.mark.parametrize("name, wrap", [("vig_tiny", False), ("vig_h_tiny", True)])
def test_release_file_loads(name, wrap, tmp_path):
    """A release in the official key layout (bare state dict, or {'model': sd}) loads through timm
    with no missing or unexpected keys; each loaded tensor is the file's."""
    sd = _random_sd(name, 0)
    path = tmp_path / f"{name}.pth"
    torch.save({"model": sd, "epoch": 299} if wrap else sd, path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    loaded = model.state_dict()
    assert set(loaded) == set(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    # the hub/URL path does not unwrap: the filter does
    assert set(checkpoint_filter_fn({"model": sd}, model)) == set(sd)


def test_pretrained_cfgs():
    cfg = timm.models.get_pretrained_cfg("vig_small.in1k")
    assert (cfg.hf_hub_id, cfg.hf_hub_filename) == ("hustvl/ViG", "vig_s_81p7acc.pth")
    assert timm.models.get_pretrained_cfg("vig_h_base.in1k").hf_hub_filename == "vig_h_b_84p2acc.pth"
    for name in list(PLAIN) + list(HIER):
        cfg = timm.models.get_pretrained_cfg(f"{name}.in1k")
        assert cfg.crop_pct == 0.875 and cfg.interpolation == "bicubic" and cfg.input_size == (3, 224, 224)
        assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert timm.models.get_pretrained_cfg("vig_h_tiny.in1k").classifier == "classifier.head"


def test_pos_embed_resize(tmp_path):
    """A 224 release loads into a 96-pixel model (pos_embed resized bicubically, 14x14 -> 6x6), and
    the 224 model resizes the same way on the fly: both give the same logits at 96 pixels."""
    sd = _random_sd("vig_tiny", 1)
    path = tmp_path / "vig_t.pth"
    torch.save(sd, path)
    small = timm.create_model("vig_tiny", pretrained=True, img_size=96, use_kernels=False,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert small.pos_embed.shape == (1, 36, 192)
    grid = sd["pos_embed"].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(small.pos_embed.data, expected)
    full = timm.create_model("vig_tiny", pretrained=True, use_kernels=False,
                             pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(full(x), small(x), rtol=1e-5, atol=1e-5)
    assert resize_pos_embed(sd["pos_embed"], (14, 14), (14, 14)) is sd["pos_embed"]
    with pytest.raises(ValueError, match="pos_embed"):
        resize_pos_embed(sd["pos_embed"], (13, 13), (6, 6))


def test_features_only():
    x = torch.randn(1, 3, 64, 64)
    plain = timm.create_model("vig_tiny", features_only=True, use_kernels=False).eval()
    assert plain.feature_info.channels() == [192] * 3 and plain.feature_info.reduction() == [16] * 3
    hier = timm.create_model("vig_h_tiny", features_only=True, use_kernels=False).eval()
    assert hier.feature_info.channels() == [96, 192, 384, 768]
    assert hier.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        assert [tuple(f.shape) for f in plain(x)] == [(1, 192, 4, 4)] * 3
        feats = hier(x)
    assert [tuple(f.shape) for f in feats] == [(1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]
    assert all(torch.isfinite(f).all() for f in feats)
    sub = timm.create_model("vig_h_tiny", features_only=True, out_indices=(1, 2), use_kernels=False).eval()
    assert len(sub.model.layers) == 3
    with torch.no_grad():
        assert [f.shape[1] for f in sub(x)] == [192, 384]


def _small(name: str, narrow: bool = False, **kwargs):
    if name in PLAIN:
        shape = dict(depth=2)
    else:   # narrow: ViG-H-T's head dims (16 key, 32 value channels), fewer heads
        shape = dict(depths=(1, 1, 1, 1), **(dict(dims=(32, 64, 96, 128), num_heads=(1, 2, 2, 4)) if narrow else {}))
    return timm.create_model(name, num_classes=10, **shape, **kwargs)


def test_forward_intermediates_head_and_reset_classifier():
    x = torch.randn(2, 3, 64, 64)
    for name in ("vig_tiny", "vig_h_tiny"):
        torch.manual_seed(0)
        model = _small(name, use_kernels=False).eval()
        with torch.no_grad():
            feats = model.forward_features(x)
            logits = model.forward_head(feats)
            final, inter = model.forward_intermediates(x)
            torch.testing.assert_close(final, feats)
            torch.testing.assert_close(model(x), logits)
            model.set_grad_checkpointing(True)
            torch.testing.assert_close(model(x), logits)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
    assert feats.shape == (2, 768, 2, 2) and [t.shape[1] for t in inter] == [96, 192, 384, 768]
    plain = _small("vig_tiny", use_kernels=False).eval()
    final, inter = plain.forward_intermediates(x, indices=[0], norm=True, output_fmt="NLC")
    assert final.shape == (2, 16, 192) and inter[0].shape == (2, 16, 192)


def test_bad_input_is_rejected():
    model = _small("vig_tiny", use_kernels=False)
    with pytest.raises(ValueError, match=r"x: expected images \[B, 3, H, W\], got shape \(3, 64, 64\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="got shape"):
        _small("vig_h_tiny", use_kernels=False)(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("vig_tiny", global_pool="token")
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), output_fmt="NHWC")


@pytest.mark.kernel
@pytest.mark.parametrize("name, size", [("vig_tiny", 64), ("vig_h_tiny", 40)])
def test_use_kernels_on_off_agree(name, size):
    """ops.gated_linear_attention's kernels (interpreted on CPU) vs the plain-PyTorch reference:
    same logits in eval and train mode (drop path off), same input gradients. ViG-H at 40 pixels:
    100 tokens in stage 1, more than one kernel chunk."""
    torch.manual_seed(0)
    model = _small(name, narrow=True, drop_path_rate=0.0)
    for m in model.modules():   # distinct forward/backward gates over a wide range, non-unit norms
        if isinstance(m, GatedLinearAttention):
            m.gk_proj[1].bias.data.normal_(0.0, 3.0)
            m.g_proj.bias.data.normal_(0.0, 1.0)
            m.g_norm.weight.data.uniform_(0.5, 1.5)
            # unit-scale q, k, v: at the N(0, 0.02) init the GLA output is ~1e-7, so g_norm's eps
            # swamps it and the logits do not depend on it (a wrong op passed unseen)
            m.in_proj[0].weight.data.normal_(0.0, 1 / 3)
            m.qkv_proj.weight.data.normal_(0.0, m.dim ** -0.5)
    x = torch.randn(2, 3, size, size)
    for train in (False, True):
        model.train(train)
        outs = []
        for enable in (True, False):
            model.set_use_kernels(enable)
            assert all(m.use_kernels == enable for m in model.modules() if isinstance(m, GatedLinearAttention))
            xi = x.clone().requires_grad_(train)
            y = model(xi)
            if train:
                y.square().sum().backward()
            outs.append((y.detach(), xi.grad))
        (on, g_on), (off, g_off) = outs
        assert torch.isfinite(on).all()
        torch.testing.assert_close(on, off, rtol=1e-4, atol=1e-4)
        if train:
            torch.testing.assert_close(g_on, g_off, rtol=1e-4, atol=1e-4)


# --- the official BiGLA math, written out: batch-concat-and-flip (training) and the fused
# --- bidirectional kernel (evaluation), on a naive token-by-token recurrence

def _naive_gla(q, k, v, g, scale, reverse=False):
    """Head-first [B, H, T, D] GLA recurrence (the vendored fla kernels' math)."""
    B, H, T, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])
    out = torch.zeros(B, H, T, v.shape[-1], dtype=q.dtype)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        S = S * g[:, :, t].exp()[..., None] + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, t] = torch.einsum("bhk,bhkv->bhv", q[:, :, t] * scale, S)
    return out


def _rms(x, w, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _official_bigla(attn: GatedLinearAttention, x: torch.Tensor, plain: bool, training: bool) -> torch.Tensor:
    """The official GatedLinearAttention (plain) / GLA2D (ViG-H) forward on [B, H, W, C]."""
    B, Hh, Ww, C = x.shape
    nh, K = attn.num_heads, attn.key_dim
    local = attn.in_proj(x.permute(0, 3, 1, 2)).flatten(2)                   # [B, C, L]
    xs = local.transpose(1, 2)                                                # [B, L, C]
    q, k, v = torch.split(F.linear(xs, attn.qkv_proj.weight), [K, K, C], dim=2)
    gk = attn.gk_proj(xs)
    fw, bw = gk.chunk(2, dim=2)
    heads = lambda t: t.unflatten(-1, (nh, -1)).transpose(1, 2)               # noqa: E731  b n (h d) -> b h n d
    dk = K // nh
    if training:
        gk = heads(torch.cat([fw, bw.flip(1)], 0))
        q, k, v = (torch.cat([heads(t), heads(t).flip(2)], 0) for t in (q, k, v))
        o = _naive_gla(q, k, v, F.logsigmoid(gk) / 16, dk ** -0.5)
        o_f, o_b = o.chunk(2)
        o = (o_f + o_b.flip(2)) / 2
    else:   # bid_fused_recurrent_gla: (forward scan + reverse scan) / 2; plain ViG then halves again
        g_f, g_b = heads(F.logsigmoid(fw) / 16), heads(F.logsigmoid(bw) / 16)
        q, k, v = heads(q), heads(k), heads(v)
        o = (_naive_gla(q, k, v, g_f, dk ** -0.5) + _naive_gla(q, k, v, g_b, dk ** -0.5, reverse=True)) / 2
        if plain:
            o = o / 2
    o = o.transpose(1, 2)                                                     # b l h d
    local = local.transpose(1, 2).unflatten(-1, (nh, -1))
    local = _rms(local, attn.l_norm.weight, attn.l_norm.eps)
    o = _rms(o, attn.g_norm.weight, attn.g_norm.eps)
    g = torch.sigmoid(attn.g_proj(xs)).unflatten(-1, (nh, -1))
    o = (o * g + local * (1 - g)).flatten(2)
    o = attn.out_act(o)
    return attn.o_proj(o).view(B, Hh, Ww, C)


@pytest.mark.parametrize("use_kernels", [True, False])
@pytest.mark.parametrize("plain", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_bigla_equals_official_formulation(plain, training, use_kernels):
    """The model's single bidirectional op call (no flips, no batch concat) equals the official
    concat-and-flip training math and the fused-kernel evaluation math (float64: the public op
    dispatches to its reference, so both of the module's call sites are checked)."""
    torch.manual_seed(0)
    attn = GatedLinearAttention(32, 2, use_act_in_conv=plain, use_out_act=plain, eval_halving=plain,
                                use_kernels=use_kernels).double()
    for p in attn.parameters():   # away from init: every term matters
        p.data.add_(0.3 * torch.randn_like(p))
    attn.train(training)
    x = torch.randn(2, 5, 7, 32, dtype=torch.float64)   # 35 tokens: two reference chunks and a remainder
    got = attn(x)
    want = _official_bigla(attn, x, plain, training)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the two official paths differ only by the extra halving before g_norm (plain ViG, eval)
    assert attn.attention_scale() == 8 ** -0.5 * (0.25 if plain and not training else 0.5)


@pytest.mark.kernel
def test_block_compiles_fullgraph():
    """torch.compile(fullgraph=True) traces a ViG block with the GLA kernels on (the registered
    foveal::gla ops), forward and backward, with the eager result."""
    from zoo.vig import GLABlock

    torch.manual_seed(0)
    block = GLABlock(32, 2, 64, use_kernels=True).train()
    x = torch.randn(2, 5 * 7, 32, requires_grad=True)
    compiled = torch.compile(lambda t: block(t, (5, 7)), fullgraph=True, backend="aot_eager")
    out, expected = compiled(x), block(x, (5, 7))
    torch.testing.assert_close(out, expected)
    params = [x, *block.parameters()]
    for a, b in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(expected.sum(), params)):
        torch.testing.assert_close(a, b)
