"""Visual Attention Network (VAN), b0-b6, in timm's style.

Paper: "Visual Attention Network" (Guo et al., 2022). The module tree and parameter names
follow the official ``VAN-Classification/models/van.py`` (``patch_embed{i}``, ``block{i}.{j}``,
``norm{i}``, ``head``) so the released ``{'state_dict': ...}`` checkpoints load unchanged.
Large kernel attention runs through ``ops.large_kernel_attention`` (fused Triton kernels)
when ``use_kernels=True``; ``False`` runs the plain PyTorch convolutions (the reference).
The fast path also runs the 1x1 convolutions of channels-last maps as matmuls over the
channel axis (same weights, same math): a cuDNN convolution costs ~0.2 ms of host time per
call, forward and backward, on the H200 host, which left VAN's training step host-bound. The
MLP's depthwise 3x3 runs on the Triton depthwise kernels where they beat cuDNN (``DWConv``).
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint

import ops

__all__ = ["VAN"]


def pointwise(conv: nn.Conv2d, x: torch.Tensor, as_matmul: bool) -> torch.Tensor:
    """``conv(x)`` for a 1x1 convolution; with ``as_matmul`` and a channels-last ``x`` [B, C, H, W],
    one ``F.linear`` over the channel axis of its [B, H, W, C] view (no copies; the result is
    channels-last [B, C_out, H, W])."""
    if as_matmul and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        y = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
        return y.permute(0, 3, 1, 2)
    return conv(x)


# Where the MLP's depthwise 3x3 runs on the kernel path (probe68, H200, batch 128, channels-last bf16
# at VAN-b0/b2's MLP widths): the Triton forward takes 0.23 against cuDNN's 0.46 ms on 56x56 maps
# (0.16 with the small-kernel tiles of session 30, probe72), 0.10-0.19 against 0.24-0.47 on 28x28
# and is level on 7x7; forward+backward is faster on maps of 28x28 and more (56x56: 0.97 against
# 1.30 ms, 1.83 against 2.37) and up to 1.6x slower on smaller ones, where the call's host path
# bounds it (0.6-0.9 ms of CPU), which keep cuDNN in training. Eager VAN steps, alternating the two
# in one process: VAN-b2 inference -15%, VAN-b0 training -6.5%, VAN-b2 training -2.5%. Under
# torch.compile cuDNN stays: Inductor fuses the conv's bias add into the GELU, which leaves cuDNN's
# bias-free NHWC depthwise kernel (13 convs: 0.99 against the Triton conv's 1.14 ms, probe70), and
# CUDA-graph inference measured 5.56 / 15.30 ms (VAN-b0 / b2) against 5.87 / 16.23 with the Triton
# 3x3 in one process (probe69).
_DW3_TRITON_MIN_PIXELS_WITH_GRAD = 28 * 28


class DWConv(nn.Module):
    """Depthwise 3x3 inside the MLP (official key ``mlp.dwconv.dwconv``)."""

    def __init__(self, dim: int, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernels and not torch.compiler.is_compiling() and (
                x.shape[-2] * x.shape[-1] >= _DW3_TRITON_MIN_PIXELS_WITH_GRAD
                or not (torch.is_grad_enabled() and (x.requires_grad or self.dwconv.weight.requires_grad))):
            return ops.depthwise_conv2d(x, self.dwconv.weight, self.dwconv.bias)
        return self.dwconv(x)


class Mlp(nn.Module):
    """1x1 -> dw3x3 -> GELU -> 1x1 on NCHW maps."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.dwconv = DWConv(hidden_features, use_kernels)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_features, in_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwconv(pointwise(self.fc1, x, self.use_kernels)))
        x = self.drop(x)
        return self.drop(pointwise(self.fc2, x, self.use_kernels))


class LKA(nn.Module):
    """Large kernel attention: dw5x5 -> dw7x7 (dilation 3) -> 1x1, gating the input. [B, C, H, W]."""

    def __init__(self, dim: int, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernels:
            return ops.large_kernel_attention(
                x, self.conv0.weight, self.conv0.bias, self.conv_spatial.weight,
                self.conv_spatial.bias, self.conv1.weight, self.conv1.bias)
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class Attention(nn.Module):
    """proj_1 -> GELU -> LKA -> proj_2, plus the inner shortcut."""

    def __init__(self, dim: int, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(dim, use_kernels)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.spatial_gating_unit(self.activation(pointwise(self.proj_1, x, self.use_kernels)))
        return pointwise(self.proj_2, x, self.use_kernels) + shortcut


class Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-2, use_kernels: bool = True):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim, use_kernels)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, use_kernels)
        self.layer_scale_1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided conv (k7 s4 for the stem, k3 s2 after) + BatchNorm."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """VAN backbone + classifier. Input [B, in_chans, H, W]; stage i output [B, C_i, H/2^(i+2), W/2^(i+2)]."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Tuple[int, ...] = (64, 128, 256, 512),
        mlp_ratios: Tuple[float, ...] = (8, 8, 4, 4),
        depths: Tuple[int, ...] = (3, 4, 6, 3),
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_kernels: bool = True,
    ):
        super().__init__()
        assert global_pool in ("avg", ""), "VAN pools by the token mean ('avg') or not at all ('')"
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.depths = depths
        self.num_stages = len(depths)
        self.grad_checkpointing = False
        self.feature_info = []
        n = sum(depths)
        dpr = [drop_path_rate * j / max(n - 1, 1) for j in range(n)]  # linspace(0, rate, n)
        cur = 0
        for i in range(self.num_stages):
            patch_embed = OverlapPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2,
                                            in_chans if i == 0 else embed_dims[i - 1], embed_dims[i])
            block = nn.ModuleList([
                Block(embed_dims[i], mlp_ratios[i], proj_drop_rate, dpr[cur + j], use_kernels=use_kernels)
                for j in range(depths[i])])
            norm = nn.LayerNorm(embed_dims[i], eps=1e-6)
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"block{i + 1}", block)
            setattr(self, f"norm{i + 1}", norm)
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f"block{i + 1}"))
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Same scheme as the official code: trunc-normal linears, fan-out normal convs.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            m.weight.data.normal_(0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                m.bias.data.zero_()

    def set_use_kernels(self, enable: bool = True) -> None:
        """Switch between the fast path (fused LKA kernels, 1x1 convs as matmuls, the MLP's
        depthwise 3x3 on the Triton kernels) and the plain PyTorch convolutions."""
        for m in self.modules():
            if isinstance(m, (LKA, Attention, Mlp, DWConv)):
                m.use_kernels = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        blocks = r"^block(\d+)" if coarse else r"^block(\d+)\.(\d+)"
        return dict(stem=r"^patch_embed1", blocks=[(blocks, None), (r"^(?:patch_embed|norm)(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            assert global_pool in ("avg", "")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _stage(self, i: int, x: torch.Tensor, last: bool) -> torch.Tensor:
        """Stage i (0-based) on NCHW input; returns normed NCHW, or normed tokens [B, N, C] when ``last``."""
        x = getattr(self, f"patch_embed{i + 1}")(x)
        for blk in getattr(self, f"block{i + 1}"):
            x = checkpoint(blk, x) if self.grad_checkpointing and not torch.jit.is_scripting() else blk(x)
        b, c, h, w = x.shape
        x = getattr(self, f"norm{i + 1}")(x.flatten(2).transpose(1, 2))
        return x if last else x.transpose(1, 2).reshape(b, c, h, w)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (after each stage's LayerNorm, as in the official dense-prediction code).

        Returns the intermediates [B, C_i, H_i, W_i] for the selected stages, and unless
        ``intermediates_only`` also the final tokens [B, N, C_last] that ``forward_head`` takes.
        """
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        intermediates = []
        last_stage = max_index if stop_early else self.num_stages - 1
        for i in range(last_stage + 1):
            x = self._stage(i, x, last=False)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x.flatten(2).transpose(1, 2), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            for name in (f"patch_embed{i + 1}", f"block{i + 1}", f"norm{i + 1}"):
                delattr(self, name)
        if max_index < self.num_stages - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        self.num_stages = max_index + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> normed final-stage tokens [B, H/32 * W/32, C_last]."""
        for i in range(self.num_stages):
            x = self._stage(i, x, last=i == self.num_stages - 1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict, model: VAN) -> dict:
    """Official checkpoints are ``{'state_dict': sd}`` with the same key names as this module
    (the URL/hub loaders do not unwrap, so unwrap here); strip DDP / compile prefixes."""
    for key in ("state_dict", "model"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        # Official dwconv in the MLP is `mlp.dwconv.dwconv`; very old exports name it `mlp.dwconv`.
        if k.endswith(("mlp.dwconv.weight", "mlp.dwconv.bias")):
            k = k.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        out[k] = v
    return out


def _create_van(variant: str, pretrained: bool = False, **kwargs) -> VAN:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        VAN, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.9, "interpolation": "bicubic", "fixed_input_size": False,
        "mean": IMAGENET_INCEPTION_MEAN, "std": IMAGENET_INCEPTION_STD,  # 0.5, 0.5
        "first_conv": "patch_embed1.proj", "classifier": "head", "license": "apache-2.0",
        **kwargs,
    }


_HF = "Visual-Attention-Network/VAN-{}-original"
default_cfgs = generate_default_cfgs({
    "van_b0.in1k": _cfg(hf_hub_id=_HF.format("Tiny"), hf_hub_filename="van_tiny_754.pth.tar"),
    "van_b1.in1k": _cfg(hf_hub_id=_HF.format("Small"), hf_hub_filename="van_small_811.pth.tar"),
    "van_b2.in1k": _cfg(hf_hub_id=_HF.format("Base"), hf_hub_filename="van_base_828.pth.tar"),
    "van_b3.in1k": _cfg(hf_hub_id=_HF.format("Large"), hf_hub_filename="van_large_839.pth.tar"),
    # No official PyTorch ImageNet-1k release of b4-b6 (mmpretrain port / IN-22k only):
    # load converted weights with pretrained_cfg_overlay=dict(file=...).
    "van_b4": _cfg(),
    "van_b5": _cfg(),
    "van_b6": _cfg(),
})

_ARCHS = {
    "van_b0": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), drop_path_rate=0.1),
    "van_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), drop_path_rate=0.1),
    "van_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), drop_path_rate=0.1),
    "van_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), drop_path_rate=0.2),
    "van_b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), drop_path_rate=0.2),
    "van_b5": dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3), drop_path_rate=0.2),
    "van_b6": dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6), drop_path_rate=0.3),
}


def _van(variant: str, pretrained: bool, **kwargs) -> VAN:
    # drop_path_rate is the training default of each variant; pass drop_path_rate=... to override.
    args = dict(mlp_ratios=(8, 8, 4, 4), **_ARCHS[variant])
    return _create_van(variant, pretrained=pretrained, **dict(args, **kwargs))


@register_model
def van_b0(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b0", pretrained, **kwargs)


@register_model
def van_b1(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b1", pretrained, **kwargs)


@register_model
def van_b2(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b2", pretrained, **kwargs)


@register_model
def van_b3(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b3", pretrained, **kwargs)


@register_model
def van_b4(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b4", pretrained, **kwargs)


@register_model
def van_b5(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b5", pretrained, **kwargs)


@register_model
def van_b6(pretrained: bool = False, **kwargs) -> VAN:
    return _van("van_b6", pretrained, **kwargs)
