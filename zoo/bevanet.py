"""BEVANet: real-time semantic segmentation with large separable kernel attention, in timm's style.

Paper: "BEVANet: Bilateral Efficient Visual Attention Network for Real-Time Semantic
Segmentation" (ICIP 2025). A PIDNet-style two-branch network: a detail branch at 1/8 of the
input and a semantic branch down to 1/64, exchanging features (PagFM), with EVA blocks (VAN
blocks whose attention is SDLSKA: a dw5x5 feeding a 1xK' and a K'x1 dilated strip conv, fused
by CKS channel and spatial gates), a DLKPPM context module and BGAF boundary-guided fusion.

The module tree and parameter names follow the official ``models/BEVANet.py`` (``BEVANet_SEG``
with the released configs: SDLSKA, DLKPPM, BGAF, kernels 35 (semantic) and 23 (detail)), so
the released fine-tuned checkpoints (``FullModel`` state dicts, keys prefixed ``model.``) load
unchanged through ``checkpoint_filter_fn``. ``use_kernels=True`` runs SDLSKA's depthwise convs
(dw5x5 and the dilated strips, where cuDNN is 2-60x slower on the GPU, probe59) through
``ops.depthwise_conv2d`` and DLKPPM's LSKA chain through ``ops.separable_large_kernel_attention``;
``False`` runs the plain PyTorch convolutions (the reference).

Outputs: ``forward`` returns the main head's logits at 1/8 of the input,
[B, num_classes, H/8, W/8] (the official evaluation upsamples them to the input with bilinear
interpolation, ``align_corners=True``: ``segment``); ``forward_aux`` also returns the two
training heads, ``[detail-semantic, main, boundary]`` as the official training forward does.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

import ops

__all__ = ["BEVANet", "SDLSKA", "CKS", "DLKPPM"]

_BN_MOMENTUM = 0.1


class PointwiseConv(nn.Module):
    """1x1 conv (official ``PWConv``: key ``*.pwconv``). It stays a cuDNN convolution on both paths:
    unlike VAN's, BEVANet's eager calls are bound by the host, and VAN's matmul form (``F.linear``
    between two permutes) cost more host time here: 15.95 against 12.80 ms of CPU per BEVANet-S
    frame at 1024x2048 (probe59, session 23)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, bias: bool = True):
        super().__init__()
        self.pwconv = nn.Conv2d(in_channels, out_channels or in_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv(x)


class DepthwiseConv(nn.Module):
    """Same-padded depthwise conv (official ``DWConv``: key ``*.dwconv``). ``triton=True`` (SDLSKA's
    large and dilated strips) runs ``ops.depthwise_conv2d`` on the kernel path; small 3x3s stay
    on cuDNN either way."""

    def __init__(self, dim: int, kernel_size: tuple[int, int] = (3, 3), dilation: int = 1,
                 triton: bool = False, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels and triton
        self.triton = triton
        padding = tuple(dilation * (k - 1) // 2 for k in kernel_size)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, 1, padding, dilation, groups=dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_kernels:
            return ops.depthwise_conv2d(x, self.dwconv.weight, self.dwconv.bias, self.dwconv.dilation[0])
        return self.dwconv(x)


def _pw_dw_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """CKS's squeeze/excite step on pooled [B, C, 1, 1] vectors: 1x1, dw3x3 (its centre tap on a
    1x1 map), BatchNorm, ReLU."""
    return nn.Sequential(PointwiseConv(cin, cout), DepthwiseConv(cout),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CKS(nn.Module):
    """Selective fusion of SDLSKA's three maps: per-branch channel gates from the pooled sum and
    per-branch spatial gates from a 7x7 conv over its channel mean and max; [B, C, H, W]."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = max(dim // 16, 32)
        self.fc_reduce = _pw_dw_bn_relu(dim, hidden)
        self.fc_expand_small = _pw_dw_bn_relu(hidden, dim)
        self.fc_expand_big_h = _pw_dw_bn_relu(hidden, dim)
        self.fc_expand_big_v = _pw_dw_bn_relu(hidden, dim)
        self.conv_squeeze = nn.Conv2d(2, 3, 7, padding=3)

    def forward(self, small: torch.Tensor, big_h: torch.Tensor, big_v: torch.Tensor) -> torch.Tensor:
        attn = small + big_h + big_v
        z = self.fc_reduce(attn.mean((2, 3), keepdim=True))
        gates = torch.cat([attn.mean(1, keepdim=True), attn.amax(1, keepdim=True)], 1)
        s_small, s_h, s_v = torch.sigmoid(self.conv_squeeze(gates)).chunk(3, dim=1)
        return (small * torch.sigmoid(self.fc_expand_small(z)) * s_small
                + big_h * torch.sigmoid(self.fc_expand_big_h(z)) * s_h
                + big_v * torch.sigmoid(self.fc_expand_big_v(z)) * s_v)


# kernel -> strip length K' of the dilation-3 strips after the dw5x5: the released configs' 23 and 35
_STRIPS = {23: 7, 35: 11}


class SDLSKA(nn.Module):
    """Split dilated large separable kernel attention: u * pw(CKS(a, h(a), v(a))), a = dw5x5(u),
    h / v = 1xK' / K'x1 depthwise strips at dilation 3. [B, C, H, W]."""

    def __init__(self, dim: int, kernel_size: int, use_kernels: bool = True):
        super().__init__()
        if kernel_size not in _STRIPS:
            raise ValueError(f"kernel_size must be one of {sorted(_STRIPS)} (got {kernel_size})")
        k = _STRIPS[kernel_size]
        self.DW_conv = DepthwiseConv(dim, (5, 5), triton=True, use_kernels=use_kernels)
        self.DW_D_conv_h = DepthwiseConv(dim, (1, k), 3, triton=True, use_kernels=use_kernels)
        self.DW_D_conv_v = DepthwiseConv(dim, (k, 1), 3, triton=True, use_kernels=use_kernels)
        self.pwconv = PointwiseConv(dim)
        self.FS_kernel = CKS(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.DW_conv(x)
        attn = self.FS_kernel(small, self.DW_D_conv_h(small), self.DW_D_conv_v(small))
        return x * self.pwconv(attn)


class LSKA(nn.Module):
    """LSKA (kernel 35), DLKPPM's attention: u * pw(dw 11x1 d3(dw 1x11 d3(dw 5x1(dw 1x5(u)))))."""

    def __init__(self, dim: int, use_kernels: bool = True):
        super().__init__()
        self.use_kernels = use_kernels
        self.DW_conv_h = DepthwiseConv(dim, (1, 5))
        self.DW_conv_v = DepthwiseConv(dim, (5, 1))
        self.DW_D_conv_h = DepthwiseConv(dim, (1, 11), 3)
        self.DW_D_conv_v = DepthwiseConv(dim, (11, 1), 3)
        self.pwconv = PointwiseConv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convs = (self.DW_conv_h, self.DW_conv_v, self.DW_D_conv_h, self.DW_D_conv_v)
        if self.use_kernels:   # the whole chain and the gate in the fused LSKA kernels
            pw = self.pwconv.pwconv
            return ops.separable_large_kernel_attention(
                x, [c.dwconv.weight for c in convs], [c.dwconv.bias for c in convs],
                [c.dwconv.dilation[0] for c in convs], pw.weight, pw.bias)
        attn = x
        for conv in convs:
            attn = conv(attn)
        return x * self.pwconv(attn)


class SpatialAttention(nn.Module):
    """proj_1 -> GELU -> gating unit -> proj_2, plus the inner shortcut (VAN's attention)."""

    def __init__(self, dim: int, gating_unit: nn.Module):
        super().__init__()
        self.proj_1 = PointwiseConv(dim)
        self.activation = nn.GELU()
        self.spatial_gating_unit = gating_unit
        self.proj_2 = PointwiseConv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class Mlp(nn.Module):
    """1x1 -> dw3x3 -> GELU -> 1x1."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = PointwiseConv(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = PointwiseConv(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class EVABlock(nn.Module):
    """Efficient visual attention block (official ``EVAN``): a VAN block with SDLSKA, layer scale
    1e-2. [B, C, H, W] -> same."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 use_kernels: bool = True):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, SDLSKA(dim, kernel_size, use_kernels))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def _token_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels of a [B, C, H, W] map (the official flatten/transpose round trip)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)   # channels-last strides, as the kernels like


class BasicBlock(nn.Module):
    """PIDNet's residual 3x3-3x3 block; ``no_relu`` leaves the sum unrectified."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=_BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else self.relu(out)


class Bottleneck(nn.Module):
    """PIDNet's 1x1-3x3-1x1 block with expansion 2, unrectified output by default."""
    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=_BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=_BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else self.relu(out)


def _make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """PIDNet's stage builder: a projection shortcut on the first block when the shape changes,
    the last of several blocks unrectified."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion, momentum=_BN_MOMENTUM))
    layers = [block(inplanes, planes, stride, downsample)]
    for i in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, no_relu=i == blocks - 1))
    return nn.Sequential(*layers)


def _bn_relu_conv(cin: int, cout: int, kernel_size: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin, momentum=_BN_MOMENTUM), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                                   bias=False))


def _bn_relu_pw(cin: int, cout: int, pool: nn.Module | None = None) -> nn.Sequential:
    layers = [] if pool is None else [pool]
    return nn.Sequential(*layers, nn.BatchNorm2d(cin, momentum=_BN_MOMENTUM), nn.ReLU(inplace=True),
                         PointwiseConv(cin, cout, bias=False))


class PagFM(nn.Module):
    """Pixel-attention-guided fusion (PIDNet): x <- (1 - s) x + s up(y), s = sigmoid(<f_x(x), up f_y(y)>)
    over channels; x [B, C, H, W] at the detail resolution, y at a coarser one."""

    def __init__(self, in_channels: int, mid_channels: int):
        super().__init__()
        self.f_x = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.f_y = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y_q = F.interpolate(self.f_y(y), size=size, mode="bilinear", align_corners=False)
        sim = torch.sigmoid((self.f_x(x) * y_q).sum(1, keepdim=True))
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return (1 - sim) * x + sim * y


class DLKPPM(nn.Module):
    """Dilated large-kernel pyramid pooling: DAPPM-style hierarchical branches (pooled at 1/2, 1/4,
    2x2 and global) plus an LSKA branch at full resolution, concatenated and compressed, plus a
    shortcut. [B, inplanes, H, W] -> [B, outplanes, H, W]."""

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int, use_kernels: bool = True):
        super().__init__()
        self.scale1 = _bn_relu_pw(inplanes, branch_planes, nn.AvgPool2d(5, 2, 2))
        self.scale2 = _bn_relu_pw(inplanes, branch_planes, nn.AvgPool2d(9, 4, 4))
        self.scale4 = _bn_relu_pw(inplanes, branch_planes, nn.AdaptiveAvgPool2d((2, 2)))
        self.scale5 = _bn_relu_pw(inplanes, branch_planes, nn.AdaptiveAvgPool2d((1, 1)))
        self.scale0 = _bn_relu_pw(inplanes, branch_planes)
        self.bn = nn.BatchNorm2d(branch_planes, momentum=_BN_MOMENTUM)
        self.lska = SpatialAttention(branch_planes, LSKA(branch_planes, use_kernels))
        self.layer_scale_lska = nn.Parameter(1e-2 * torch.ones(branch_planes))
        self.process1 = _bn_relu_conv(branch_planes, branch_planes, dilation=2)
        self.process2 = _bn_relu_conv(branch_planes, branch_planes, dilation=2)
        self.process_lska = _bn_relu_conv(branch_planes, branch_planes)
        self.process4 = _bn_relu_conv(branch_planes, branch_planes)
        self.process5 = _bn_relu_conv(branch_planes, branch_planes)
        self.compression = _bn_relu_pw(branch_planes * 6, outplanes)
        self.shortcut = _bn_relu_pw(inplanes, outplanes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        s0 = self.scale0(x)
        s_lska = s0 + self.layer_scale_lska[:, None, None] * self.lska(self.bn(s0))
        s1 = self.process1(up(self.scale1(x)) + s0)
        s2 = self.process2(up(self.scale2(x)) + s1)
        s3 = self.process_lska(s_lska + s2)
        s4 = self.process4(up(self.scale4(x)) + s3)
        s5 = self.process5(up(self.scale5(x)) + s4)
        return self.compression(torch.cat([s0, s1, s2, s3, s4, s5], 1)) + self.shortcut(x)


class BGAF(nn.Module):
    """Boundary-guided adaptive fusion of the detail (p) and context (i) maps under the boundary
    logits d: out(sigmoid(d) p' + (1 - sigmoid(d)) i' + p' + i')."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_p = _bn_relu_conv(in_channels, out_channels)
        self.conv_i = _bn_relu_conv(in_channels, out_channels)
        self.out = _bn_relu_conv(in_channels, out_channels)

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        p, i = self.conv_p(p), self.conv_i(i)
        edge = torch.sigmoid(d)
        return self.out(edge * p + (1 - edge) * i + p + i)


class SegmentHead(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv1x1 (official ``segmenthead``)."""

    def __init__(self, inplanes: int, interplanes: int, outplanes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, momentum=_BN_MOMENTUM)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes, momentum=_BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(self.relu(self.bn1(x))))))


class BEVANet(nn.Module):
    """BEVANet segmentation network. Input [B, in_chans, H, W] (H, W multiples of 64); ``forward``
    returns logits [B, num_classes, H/8, W/8]. Training needs batches of two or more, as the
    official code does: CKS applies BatchNorm to pooled [B, C, 1, 1] maps.

    Args:
        planes: base width c (32 for BEVANet-S, 64 otherwise); the detail branch has 2c channels,
            the semantic branch 4c / 8c / 16c at 1/16, 1/32, 1/64.
        depths: the official ``NUM_BLOCKS``: BasicBlocks of ``layer1`` and ``layer3_detail``
            (``[0]``), ``layer2`` (``[1]``) and ``layer3_semantic`` (``[2]``); ``[3]`` and ``[4]``
            build nothing in the released configuration (EVA pairs replace those stages).
        drop_path_rate: stochastic depth over the five EVA blocks (0 in the official recipes).
        ppm_planes, head_planes: DLKPPM branch width and the heads' hidden width.
        aux_heads: build the two training heads (``seghead_ds``, ``seghead_db``) that the
            official training loss uses and the released checkpoints contain.
    """

    def __init__(self, num_classes: int = 19, in_chans: int = 3, planes: int = 64,
                 depths: tuple[int, ...] = (2, 2, 4, 4, 2), ppm_planes: int = 96, head_planes: int = 128,
                 semantic_kernel_size: int = 35, detail_kernel_size: int = 23, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, aux_heads: bool = True, use_kernels: bool = True):
        super().__init__()
        c = planes
        self.num_classes = num_classes
        dpr = iter([drop_path_rate * j / 4 for j in range(5)])   # the five EVA blocks, in build order

        def eva(dim: int, k: int) -> EVABlock:
            return EVABlock(dim, k, mlp_ratio, next(dpr), use_kernels)

        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, c, 3, 2, 1), nn.BatchNorm2d(c, momentum=_BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 2, 1), nn.BatchNorm2d(c, momentum=_BN_MOMENTUM), nn.ReLU(inplace=True))
        self.relu = nn.ReLU()
        self.layer1 = _make_layer(BasicBlock, c, c, depths[0])
        self.layer2 = _make_layer(BasicBlock, c, 2 * c, depths[1], stride=2)
        # semantic branch: 1/16 (residual), then EVA pairs at 1/32 and 1/64
        self.layer3_semantic = _make_layer(BasicBlock, 2 * c, 4 * c, depths[2], stride=2)
        self.layer4_down_semantic = _make_layer(BasicBlock, 4 * c, 8 * c, 1, stride=2)
        self.layer4_semantic_1 = eva(8 * c, semantic_kernel_size)
        self.norm4_semantic_1 = nn.LayerNorm(8 * c)
        self.layer4_semantic_2 = eva(8 * c, semantic_kernel_size)
        self.norm4_semantic_2 = nn.LayerNorm(8 * c)
        # detail branch at 1/8
        self.layer3_detail = _make_layer(BasicBlock, 2 * c, 2 * c, depths[0])
        self.compression3 = nn.Sequential(nn.Conv2d(4 * c, 2 * c, 1, bias=False),
                                          nn.BatchNorm2d(2 * c, momentum=_BN_MOMENTUM))
        self.fuse_sd_3 = PagFM(2 * c, c)
        self.layer4_detail_conv = _make_layer(BasicBlock, 2 * c, 2 * c, 1)
        self.layer4_detail = eva(2 * c, detail_kernel_size)
        self.norm4_detail = nn.LayerNorm(2 * c)
        self.compression4 = nn.Sequential(nn.Conv2d(8 * c, 2 * c, 1, bias=False),
                                          nn.BatchNorm2d(2 * c, momentum=_BN_MOMENTUM))
        self.fuse_sd_4 = PagFM(2 * c, c)
        self.layer5_detail_semantic = _make_layer(Bottleneck, 2 * c, 2 * c, 1)
        # segmentation: the semantic branch's last stage, context, fusion, heads
        self.layer5_down_semantic_seg = _make_layer(BasicBlock, 8 * c, 16 * c, 1, stride=2)
        self.layer5_semantic_1_seg = eva(16 * c, semantic_kernel_size)
        self.norm5_semantic_1_seg = nn.LayerNorm(16 * c)
        self.layer5_semantic_2_seg = eva(16 * c, semantic_kernel_size)
        self.norm5_semantic_2_seg = nn.LayerNorm(16 * c)
        self.layer5_detail_boundary = _make_layer(Bottleneck, 2 * c, 2 * c, 1)
        self.spp = DLKPPM(16 * c, ppm_planes, 4 * c, use_kernels)
        self.dfm = BGAF(4 * c, 4 * c)
        self.aux_heads = aux_heads
        if aux_heads:
            self.seghead_ds = SegmentHead(2 * c, head_planes, num_classes)
            self.seghead_db = SegmentHead(2 * c, c, 1)
        self.head = SegmentHead(4 * c, head_planes, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official segmentation model keeps PyTorch's defaults except inside the EVA blocks
        # (fan-out normal convs); BatchNorm starts at (1, 0) either way.
        if isinstance(m, EVABlock):
            for conv in m.modules():
                if isinstance(conv, nn.Conv2d):
                    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
                    nn.init.normal_(conv.weight, 0, (2.0 / fan_out) ** 0.5)
                    if conv.bias is not None:
                        nn.init.zeros_(conv.bias)

    def set_use_kernels(self, enable: bool = True) -> None:
        """Switch between the fast path (Triton depthwise and LSKA kernels) and the plain PyTorch
        convolutions."""
        for m in self.modules():
            if isinstance(m, DepthwiseConv):
                m.use_kernels = enable and m.triton
            elif isinstance(m, LSKA):
                m.use_kernels = enable

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> (semantic [B, 16c, H/64, W/64], detail-semantic [B, 4c, H/8, W/8], detail [B, 2c, H/8, W/8],
        the first fused detail map for the auxiliary head [B, 2c, H/8, W/8])."""
        x = self.relu(self.layer1(self.conv1(x)))
        x = self.relu(self.layer2(x))
        xs = self.relu(self.layer3_semantic(x))
        # the official code rectifies this map in place after keeping it for the auxiliary head,
        # so that head sees it rectified too
        xd = self.relu(self.fuse_sd_3(self.layer3_detail(x), self.compression3(xs)))
        xds_inter = xd
        xs = _token_norm(self.norm4_semantic_1, self.layer4_semantic_1(self.layer4_down_semantic(xs)))
        xs = _token_norm(self.norm4_semantic_2, self.layer4_semantic_2(xs))
        xd = _token_norm(self.norm4_detail, self.layer4_detail(self.layer4_detail_conv(xd)))
        xd = self.fuse_sd_4(xd, self.compression4(xs))
        xds = self.layer5_detail_semantic(xd)
        xs = _token_norm(self.norm5_semantic_1_seg, self.layer5_semantic_1_seg(self.layer5_down_semantic_seg(xs)))
        xs = _token_norm(self.norm5_semantic_2_seg, self.layer5_semantic_2_seg(xs))
        return xs, xds, xd, xds_inter

    def _main(self, xs, xds, xd) -> torch.Tensor:
        context = F.interpolate(self.spp(xs), size=xds.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.dfm(xds, context, self.layer5_detail_boundary(xd)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> main-head logits [B, num_classes, H/8, W/8]."""
        xs, xds, xd, _ = self._features(x)
        return self._main(xs, xds, xd)

    def forward_aux(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The official training outputs, all at 1/8: [detail-semantic logits [B, K, ...], main
        logits [B, K, ...], boundary logits [B, 1, ...]] (needs ``aux_heads``)."""
        if not self.aux_heads:
            raise RuntimeError("forward_aux needs the model built with aux_heads=True")
        xs, xds, xd, xds_inter = self._features(x)
        return [self.seghead_ds(xds_inter), self._main(xs, xds, xd), self.seghead_db(xd)]

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution [B, num_classes, H, W], as the official evaluation
        upsamples them (bilinear, ``align_corners=True``); ``.argmax(1)`` gives the labels."""
        return F.interpolate(self(x), size=x.shape[-2:], mode="bilinear", align_corners=True)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.conv2

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New class count for the main and the detail-semantic heads (fine-tuning on another
        dataset); ``global_pool`` is accepted for timm's interface and ignored (dense output)."""
        self.num_classes = num_classes
        heads = [self.head] + ([self.seghead_ds] if self.aux_heads else [])
        for h in heads:
            h.conv2 = nn.Conv2d(h.conv2.in_channels, num_classes, 1, bias=True)


def checkpoint_filter_fn(state_dict: dict, model: BEVANet) -> dict:
    """An official file -> this model's state dict.

    - Fine-tuned releases (``FullModel.state_dict()``): keys prefixed ``model.``, plus the loss's
      buffers (``sem_loss.criterion.weight``), which are dropped.
    - ImageNet releases of the classification network (``{'state_dict': ...}``, maybe with
      ``module.``): as the official loader does, only the tensors whose name and shape match this
      model are kept (the backbone; the classification stage and head do not transfer), which
      ``bevanet*.in1k`` loads non-strictly.
    Without ``aux_heads`` the two training heads are dropped.
    """
    for key in ("state_dict", "model"):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    if any(k.startswith("model.") for k in state_dict):
        state_dict = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    if model is not None and "last_layer.0.weight" in out:   # the ImageNet classification network
        own = model.state_dict()
        out = {k: v for k, v in out.items() if k in own and own[k].shape == v.shape}
    if model is not None and not model.aux_heads:
        out = {k: v for k, v in out.items() if not k.startswith(("seghead_ds.", "seghead_db."))}
    return out


def _create_bevanet(variant: str, pretrained: bool = False, **kwargs) -> BEVANet:
    if kwargs.pop("features_only", False):
        raise ValueError(f"{variant} is a segmentation network with a dense output; features_only is not "
                         "supported (forward gives [B, num_classes, H/8, W/8] logits)")
    # the ImageNet files hold the classification network: its backbone loads, the rest keeps its init
    strict = not str(kwargs.get("pretrained_cfg") or "").endswith("in1k")
    return build_model_with_cfg(BEVANet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                pretrained_strict=strict, **kwargs)


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url, "num_classes": 19, "input_size": (3, 1024, 2048), "pool_size": None,
        "crop_pct": 1.0, "interpolation": "bilinear", "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1.0", "classifier": "head.conv2", "license": "mit", **kwargs,
    }


# The official releases are Google Drive links (BEVANet README), not fetchable by timm: download
# one and pass pretrained_cfg_overlay=dict(file=...). weights/manifest.yaml lists them.
_GD = "https://drive.google.com/file/d/{}/view"
default_cfgs = generate_default_cfgs({
    "bevanet_s.cityscapes": _cfg(_GD.format("1tk8vNr4t9qK481uid65NCj0fPvjLIBRk")),
    "bevanet_s.camvid": _cfg(_GD.format("1mcWyBpG-NyG0-i7uS17si1CCb1QiFyNn"), num_classes=11,
                             input_size=(3, 720, 960)),
    "bevanet_s.in1k": _cfg(_GD.format("1adaWjRHfoS97lxyEZHkM0vOn_1KFbI7j")),
    "bevanet.cityscapes": _cfg(_GD.format("1IxKY85Yx418Q8FmiI2tGj0-TrGahuUxe")),
    "bevanet.ade20k": _cfg(_GD.format("1WxXegdi1XgKDGj0CQvvYK4NdWm7XxCVp"), num_classes=150,
                           input_size=(3, 512, 512)),
    "bevanet.in1k": _cfg(_GD.format("1klSGNlUs6h7FHJ_lvOvKQEyzeWx_wrd0")),
    # configurations released without weights
    "bevanet_sw": _cfg(),
    "bevanet_l": _cfg(),
})

_ARCHS = {  # the official configs/cityscapes/BEVANet*.yaml: PLANES, NUM_BLOCKS, PPM_PLANES, HEAD_PLANES
    "bevanet_s": dict(planes=32, depths=(2, 2, 3, 3, 2), ppm_planes=96, head_planes=128),
    "bevanet": dict(planes=64, depths=(2, 2, 4, 4, 2), ppm_planes=96, head_planes=128),
    "bevanet_sw": dict(planes=64, depths=(2, 2, 3, 3, 2), ppm_planes=96, head_planes=128),
    "bevanet_l": dict(planes=64, depths=(3, 3, 4, 4, 2), ppm_planes=112, head_planes=256),
}


def _bevanet(variant: str, pretrained: bool, **kwargs) -> BEVANet:
    return _create_bevanet(variant, pretrained=pretrained, **dict(_ARCHS[variant], **kwargs))


@register_model
def bevanet_s(pretrained: bool = False, **kwargs) -> BEVANet:
    return _bevanet("bevanet_s", pretrained, **kwargs)


@register_model
def bevanet(pretrained: bool = False, **kwargs) -> BEVANet:
    return _bevanet("bevanet", pretrained, **kwargs)


@register_model
def bevanet_sw(pretrained: bool = False, **kwargs) -> BEVANet:
    return _bevanet("bevanet_sw", pretrained, **kwargs)


@register_model
def bevanet_l(pretrained: bool = False, **kwargs) -> BEVANet:
    return _bevanet("bevanet_l", pretrained, **kwargs)
