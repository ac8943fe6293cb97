"""BiFormer (Zhu et al., CVPR 2023): vision transformer with bi-level routing attention.

Faithful to the official legacy-BRA models (rayleizhu/BiFormer ``models/biformer.py`` +
``ops/bra_legacy.py``): same module names (official checkpoints load unchanged), the
``qk_dim ** -0.5`` scale over the full channel count, LCE (dw 5x5) on V, ``auto_pad`` for maps
not divisible by ``n_win``, and full attention with LePE (8 heads) in stage 4.
``use_kernels=True`` runs token attention through ``ops.routing_attention``'s fused kernels
(routing and attention, reading the qkv projection in place) and, under autocast, LayerNorm in
the autocast dtype (timm's ``fast_layer_norm``: fp32 statistics inside, bf16 in and out, where
autocast would save an fp32 copy of the block input); ``False`` runs the official gather
algorithm and PyTorch's autocast LayerNorm.
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.layers.fast_norm import fast_layer_norm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

import ops
from ops.routing import routing_attention_reference

__all__ = ["BiFormer", "BiLevelRoutingAttention", "AttentionLePE"]


class QKVLinear(nn.Module):
    """Official ``QKVLinear``: one Linear producing q (qk_dim), k (qk_dim) and v (dim)."""

    def __init__(self, dim: int, qk_dim: int, bias: bool = True):
        super().__init__()
        self.qk_dim = qk_dim
        self.qkv = nn.Linear(dim, qk_dim + qk_dim + dim, bias=bias)

    def forward(self, x):
        return self.qkv(x).split([self.qk_dim, self.qk_dim + x.shape[-1]], dim=-1)


class BiLevelRoutingAttention(nn.Module):
    """Legacy BRA on NHWC input: routing on region means, token attention to top-k regions."""

    def __init__(self, dim: int, num_heads: int = 8, n_win: int = 7, topk: int = 4, side_dwconv: int = 5,
                 auto_pad: bool = True, use_kernels: bool = True):
        super().__init__()
        self.dim = dim
        self.qk_dim = dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.auto_pad = auto_pad
        self.use_kernels = use_kernels
        self.scale = self.qk_dim ** -0.5  # official quirk: full qk_dim, not head_dim
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)
        self.qkv = QKVLinear(dim, self.qk_dim)
        self.wo = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ret_attn_mask: bool = False):
        """x: [B, H, W, C] -> [B, H, W, C] (and the routing indices [B, n_win^2, topk])."""
        H_in, W_in = x.shape[1:3]
        if self.auto_pad:
            pad_r, pad_b = (-W_in) % self.n_win, (-H_in) % self.n_win
            if pad_r or pad_b:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # padded tokens then get the qkv bias, as official
        elif x.shape[1] % self.n_win or x.shape[2] % self.n_win:
            raise ValueError(f"map {tuple(x.shape[1:3])} is not divisible by n_win={self.n_win}; set auto_pad=True")
        q, kv = self.qkv(x)
        k, v = kv.split([self.qk_dim, self.dim], dim=-1)
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if self.use_kernels:
            out = ops.routing_attention(q, k, v, self.n_win, self.topk, scale=self.scale,
                                        num_heads=self.num_heads, return_indices=ret_attn_mask)
            out, idx = out if ret_attn_mask else (out, None)
        else:
            idx = ops.routing.region_routing(q, k, (self.n_win, self.n_win), self.topk, self.scale)
            out = routing_attention_reference(q, k, v, idx, (self.n_win, self.n_win), self.num_heads, self.scale)
        out = self.wo(out + lepe)
        if out.shape[1] != H_in or out.shape[2] != W_in:
            out = out[:, :H_in, :W_in].contiguous()
        return (out, idx) if ret_attn_mask else out


class AttentionLePE(nn.Module):
    """Official stage-4 attention: full MHSA + LePE (dw conv on the block input), NHWC."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        lepe = self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        out = out.transpose(1, 2).reshape(B, H * W, C) + lepe
        return self.proj(out).reshape(B, H, W, C)


class Block(nn.Module):
    def __init__(self, dim: int, drop_path: float = 0.0, num_heads: int = 8, n_win: int = 7, topk: int = 4,
                 mlp_ratio: float = 3.0, side_dwconv: int = 5, auto_pad: bool = True, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads, n_win, topk, side_dwconv, auto_pad, use_kernels)
        else:  # topk == -2 in the official configs
            self.attn = AttentionLePE(dim, side_dwconv=side_dwconv)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Identity(), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self._norm(self.norm1, x)))
        x = x + self.drop_path(self.mlp(self._norm(self.norm2, x)))
        return x.permute(0, 3, 1, 2)

    def _norm(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernels:  # same math: the next Linear rounds autocast's fp32 output to bf16 anyway
            return fast_layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return norm(x)


class BiFormer(nn.Module):
    def __init__(self, depth=(2, 2, 8, 2), in_chans: int = 3, num_classes: int = 1000,
                 embed_dim=(64, 128, 256, 512), head_dim: int = 32, n_win: int = 7, topks=(1, 4, 16, -2),
                 mlp_ratios=(3, 3, 3, 3), side_dwconv: int = 5, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 auto_pad: bool = True, use_kernels: bool = True, global_pool: str = "avg"):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, embed_dim[0] // 2, 3, 2, 1), nn.BatchNorm2d(embed_dim[0] // 2), nn.GELU(),
            nn.Conv2d(embed_dim[0] // 2, embed_dim[0], 3, 2, 1), nn.BatchNorm2d(embed_dim[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(embed_dim[i], embed_dim[i + 1], 3, 2, 1), nn.BatchNorm2d(embed_dim[i + 1])))
        n = sum(depth)
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.stages = nn.ModuleList()
        self.feature_info = []
        cur = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                Block(embed_dim[i], dpr[cur + j], embed_dim[i] // head_dim, n_win, topks[i], mlp_ratios[i],
                      side_dwconv, auto_pad, use_kernels) for j in range(depth[i])]))
            cur += depth[i]
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.norm = nn.BatchNorm2d(embed_dim[-1])
        self.pre_logits = nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def set_use_kernels(self, enable: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, (BiLevelRoutingAttention, Block)):
                m.use_kernels = enable

    @torch.jit.ignore
    def no_weight_decay(self):
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        stage = r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)"
        return dict(stem=r"^downsample_layers\.0",
                    blocks=[(stage, None), (r"^downsample_layers\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample_layers[i](x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models._manipulate import checkpoint_seq
            return checkpoint_seq(self.stages[i], x)
        return self.stages[i](x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Stage outputs [B, C_i, H/2^(i+2), W/2^(i+2)] for the selected stages."""
        assert output_fmt == "NCHW", "only NCHW output is supported"
        take_indices, max_index = feature_take_indices(4, indices)
        intermediates = []
        last = max_index if stop_early or intermediates_only else 3
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == 3 else x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(4, indices)
        self.stages = self.stages[:max_index + 1]
        self.downsample_layers = self.downsample_layers[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = self._stage(i, x)
        return self.pre_logits(self.norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.flatten(2).mean(-1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, checkpoint_path: str, prefix: str = "") -> None:
        """timm's custom-load hook: load an official release's ``model`` weights (not ``model_ema``)."""
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            except OSError:   # a missing or unreadable file: nothing to convert
                raise
            except Exception as e:  # e.g. an OmegaConf ``args`` that weights_only refuses
                raise RuntimeError(
                    f"could not load {checkpoint_path} safely ({e}); convert the trusted file once to a plain "
                    "state dict: torch.save(torch.load(path, weights_only=False)['model'], out)") from e
        state_dict = checkpoint_filter_fn(checkpoint, self)
        head_w = state_dict.get("head.weight")
        if head_w is not None and (not isinstance(self.head, nn.Linear) or head_w.shape != self.head.weight.shape):
            state_dict.pop("head.weight")
            state_dict.pop("head.bias", None)
            self.load_state_dict(state_dict, strict=False)
        else:
            self.load_state_dict(state_dict, strict=True)


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Official checkpoint -> this model: unwrap ``model`` (the evaluated weights, preferred over
    ``model_ema``), strip DDP/compile prefixes; key names are the official ones."""
    for key in ("model", "state_dict", "model_ema", "state_dict_ema"):
        if isinstance(state_dict, dict) and key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            continue
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> BiFormer:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # Official releases hold both ``model`` and ``model_ema``; timm's generic file loader would
    # take the EMA. custom_load routes files/URLs through BiFormer.load_pretrained instead.
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    overlay["custom_load"] = True
    return build_model_with_cfg(
        BiFormer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        pretrained_cfg_overlay=overlay,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "downsample_layers.0.0", "classifier": "head", "license": "mit", "custom_load": True,
        **kwargs,
    }


# The official releases are OneDrive links listed in the BiFormer README (``model_urls``), not
# fetchable without a browser session: download one and pass pretrained_cfg_overlay=dict(file=...).
default_cfgs = generate_default_cfgs({
    "biformer_tiny.in1k": _cfg(),
    "biformer_small.in1k": _cfg(),
    "biformer_base.in1k": _cfg(),
})


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    args = dict(depth=(2, 2, 8, 2), embed_dim=(64, 128, 256, 512))
    return _create_biformer("biformer_tiny", pretrained, **dict(args, **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    args = dict(depth=(4, 4, 18, 4), embed_dim=(64, 128, 256, 512))
    return _create_biformer("biformer_small", pretrained, **dict(args, **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    args = dict(depth=(4, 4, 18, 4), embed_dim=(96, 192, 384, 768))
    return _create_biformer("biformer_base", pretrained, **dict(args, **kwargs))
