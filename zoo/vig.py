"""ViG: vision backbones on bidirectional gated linear attention, in timm's style.

Paper: "ViG: Linear-complexity Visual Sequence Learning with Gated Linear Attention" (Liao et
al., 2024). Two families, faithful to the official ``hustvl/ViG`` code (``classification/models/
vig.py`` and ``vig_h.py`` with the released ``configs/vig*/*.yaml``):

- plain ViG (``vig_tiny|small|base``): a DeiT-like isotropic network at stride 16 (a two-conv
  stem, an absolute position embedding resized bicubically to other grids, RMSNorm pre-norm
  blocks, a SwiGLU MLP, token-mean pooling);
- hierarchical ViG-H (``vig_h_tiny|small|base``): the VMamba layout with four stages at strides
  4-32, LayerNorm over channels, a SwiGLU MLP, and ``classifier.{norm,head}``.

The token mixer is BiGLA (:class:`GatedLinearAttention`): a depthwise 3x3 conv gives the local
features ``xs`` (SiLU after it in ViG-T only); q, k, v and two sets of per-key-channel forget
gates (``gk_proj``: a rank-16 bottleneck whose output splits into forward and backward gates,
``logsigmoid(.) / 16``) come from ``xs``; GLA runs over the row-major token sequence in both
directions and the two outputs are averaged; "2D gating locality injection" then mixes the
per-head RMS-normed GLA output with the per-head RMS-normed local features through
``sigmoid(g_proj(xs))``; SiLU (ViG-T only) and ``o_proj`` follow.

The official training path runs one causal GLA over ``cat([x, flip(x)])`` along the batch and
returns ``(o_f + flip(o_b)) / 2``; that is ``ops.gated_linear_attention(..., direction=
"bidirectional", reverse_gate=g_bwd)`` with half the scale, without flips or concatenation
(the diagonal term counts in both directions in both forms). The official evaluation path (a
fused bidirectional kernel) returns the same average, but plain ViG halves it once more before
``g_norm`` (ViG-H does not); ``g_norm`` is an RMSNorm, so this only moves its eps, and it is
reproduced: plain ViG in ``eval()`` mode scales q by ``K ** -0.5 / 4``, in ``train()`` mode by
``K ** -0.5 / 2``, exactly like the official code in each mode.

Parameter names are the official state-dict keys (``Linear2d`` layers of ViG-H are plain
``nn.Linear`` here, with the same [out, in] weights; ViG-H runs channels-last internally,
which is the same math as the official channels-first ``LayerNorm2d``/``Linear2d``), so the
released checkpoints (HF ``hustvl/ViG``, bare state dicts or ``{'model': ...}``) load through
``checkpoint_filter_fn``. fla's fused Triton RMSNorm/SwiGLU are written here in plain PyTorch
(fp32 statistics, output in the input dtype, as fla does). ``use_kernels=True`` runs GLA
through ``ops.gated_linear_attention`` (Triton on CUDA); ``False`` through the plain-PyTorch
``ops.gla.reference`` (the reference for tests and benchmarks).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq

import ops
from ops.gla.reference import gated_linear_attention_reference

__all__ = ["ViG", "HierViG", "GatedLinearAttention", "RMSNorm", "resize_pos_embed"]

_GATE_LOGIT_NORMALIZER = 16
_GATE_LOW_RANK_DIM = 16


def _check_images(x: torch.Tensor, in_chans: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a tensor of images [B, {in_chans}, H, W], got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"x: expected images [B, {in_chans}, H, W], got shape {tuple(x.shape)}")


def _drop_path_rates(rate: float, n: int) -> List[float]:
    """The official stochastic-depth rule, ``torch.linspace(0, rate, n)`` in fp32 (its rounding
    included: it sets the kept paths' 1 / (1 - p) scaling)."""
    return torch.linspace(0, rate, n, device="cpu").tolist()


class RMSNorm(nn.Module):
    """fla's ``RMSNorm`` (weight only): ``x / sqrt(mean(x^2) + eps) * weight`` over the last dim,
    statistics in fp32 (fp64 for fp64 input), output in the input's dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        math = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = F.rms_norm(x.to(math), (self.hidden_size,), self.weight.to(math), self.eps)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (official ``LayerNorm2d``; eps 1e-5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def resize_pos_embed(pos_embed: torch.Tensor, src_hw: Sequence[int], dst_hw: Sequence[int]) -> torch.Tensor:
    """[1, h*w, C] -> [1, H*W, C]: bicubic (``align_corners=False``, no antialias) on the (h, w)
    grid, as the official ``resize_pos_embed`` (in fp32 for half-precision embeddings)."""
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if src_hw == dst_hw:
        return pos_embed
    _, n, c = pos_embed.shape
    if n != src_hw[0] * src_hw[1]:
        raise ValueError(f"pos_embed: {n} tokens do not form the {src_hw[0]}x{src_hw[1]} grid")
    dtype = pos_embed.dtype
    grid = pos_embed.reshape(1, src_hw[0], src_hw[1], c).permute(0, 3, 1, 2)
    if dtype not in (torch.float32, torch.float64):
        grid = grid.float()
    grid = F.interpolate(grid, size=dst_hw, mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(dtype)


class GatedLinearAttention(nn.Module):
    """BiGLA token mixer with direction-wise gates and 2D gating locality injection.

    Input and output channels-last maps [B, H, W, C]; the sequence is the row-major token order.
    Official ``GatedLinearAttention`` (plain ViG) / ``GLA2D`` (ViG-H) with ``expand_k=0.5,
    expand_v=1``. ``eval_halving``: the plain-ViG evaluation path halves the averaged GLA output
    once more (see the module docstring).
    """

    def __init__(self, dim: int, num_heads: int, expand_k: float = 0.5, use_act_in_conv: bool = False,
                 use_out_act: bool = False, norm_eps: float = 1e-6, eval_halving: bool = False,
                 use_kernels: bool = True):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.key_dim = int(dim * expand_k)
        self.value_dim = dim   # expand_v = 1: the local features are normed per value head
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide key dim {self.key_dim} and value dim "
                             f"{self.value_dim}")
        self.head_k_dim = self.key_dim // num_heads
        self.head_v_dim = self.value_dim // num_heads
        self.eval_halving = eval_halving
        self.use_kernels = use_kernels
        self.in_proj = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False),
            nn.SiLU() if use_act_in_conv else nn.Identity())
        self.qkv_proj = nn.Linear(dim, 2 * self.key_dim + self.value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, _GATE_LOW_RANK_DIM, bias=False),
            nn.Linear(_GATE_LOW_RANK_DIM, 2 * self.key_dim, bias=True))   # [forward | backward] gates
        self.o_proj = nn.Linear(self.value_dim, dim, bias=False)
        self.g_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        self.l_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        self.g_proj = nn.Linear(dim, self.value_dim, bias=True)
        self.out_act = nn.SiLU() if use_out_act else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official ``reset_parameters``: Xavier-uniform (gain 2^-2.5) for the projections and the conv."""
        for w in (self.qkv_proj.weight, self.in_proj[0].weight, self.g_proj.weight, self.o_proj.weight,
                  self.gk_proj[0].weight, self.gk_proj[1].weight):
            nn.init.xavier_uniform_(w, gain=2 ** -2.5)

    def attention_scale(self) -> float:
        """The q scale that reproduces the official output: the mean of the two directions
        (``/ 2``), and the extra ``/ 2`` of plain ViG's evaluation path."""
        return self.head_k_dim ** -0.5 * (0.25 if self.eval_halving and not self.training else 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, dk, dv = self.num_heads, self.head_k_dim, self.head_v_dim
        xs = self.in_proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        q, k, v = self.qkv_proj(xs).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        gates = F.logsigmoid(self.gk_proj(xs)) / _GATE_LOGIT_NORMALIZER
        g_fwd, g_bwd = gates.chunk(2, dim=-1)
        q, k, g_fwd, g_bwd = (t.unflatten(-1, (h, dk)) for t in (q, k, g_fwd, g_bwd))
        v = v.unflatten(-1, (h, dv))
        scale = self.attention_scale()
        local, g = xs.unflatten(-1, (h, dv)), self.g_proj(xs).unflatten(-1, (h, dv))
        if self.use_kernels:
            o = ops.gated_linear_attention(q, k, v, g_fwd, scale=scale, direction="bidirectional",
                                           reverse_gate=g_bwd)
            # both RMSNorms, the sigmoid and the blend in one kernel each way (fp32 inside)
            o = ops.norm_gate_mix(o, local.to(o.dtype), g.to(o.dtype), self.g_norm.weight, self.l_norm.weight,
                                  self.g_norm.eps)
        else:
            o = gated_linear_attention_reference(q, k, v, g_fwd, scale, "bidirectional", g_bwd)
            g = torch.sigmoid(g)
            o = self.g_norm(o) * g + self.l_norm(local) * (1 - g)
        o = self.o_proj(self.out_act(o.flatten(2)))
        return o.view(B, H, W, C)


def _set_use_kernels(model: nn.Module, enable: bool) -> None:
    for m in model.modules():
        if isinstance(m, GatedLinearAttention):
            m.use_kernels = enable


class GLAMLP(nn.Module):
    """Plain ViG's SwiGLU MLP: ``down_proj(silu(gate) * up)`` with ``[gate | up] = gate_proj(x)``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, y = self.gate_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * y)


class GatedMlp(nn.Module):
    """ViG-H's SwiGLU MLP (official ``gMlp``): ``fc2(silu(gate) * up)`` with ``[gate | up] = fc1(x)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, y = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(F.silu(gate) * y))


class GLABlock(nn.Module):
    """Plain ViG block on tokens [B, N, C]: RMSNorm pre-norm, BiGLA, RMSNorm, SwiGLU MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, drop_path: float = 0.0,
                 use_act_in_conv: bool = False, use_out_act: bool = False, norm_eps: float = 1e-6,
                 use_kernels: bool = True):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps=norm_eps)
        self.attn = GatedLinearAttention(dim, num_heads, use_act_in_conv=use_act_in_conv, use_out_act=use_out_act,
                                         norm_eps=norm_eps, eval_halving=True, use_kernels=use_kernels)
        self.mlp_norm = RMSNorm(dim, eps=norm_eps)
        self.mlp = GLAMLP(dim, mlp_hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        x = x + self.drop_path(self.attn(self.attn_norm(x).view(B, hw[0], hw[1], C)).view(B, N, C))
        return x + self.drop_path(self.mlp(self.mlp_norm(x)))


class PatchEmbed(nn.Module):
    """Plain ViG stem (official ``V2PatchEmbed``, patch 16): conv k9 s8 p1 -> LN2d -> SiLU -> conv
    k3 s2 p1 -> LN2d. [B, 3, H, W] -> [B, C, H/16, W/16]."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, 9, 8, 1), LayerNorm2d(embed_dim // 2), nn.SiLU(),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1), LayerNorm2d(embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViG(nn.Module):
    """Plain (isotropic) ViG. Input [B, in_chans, H, W]; tokens [B, H/16 * W/16, C] in every block."""

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_hidden: Optional[int] = None,
        use_act_in_conv: bool = False,
        use_out_act: bool = False,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_kernels: bool = True,
    ):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool: ViG pools by the token mean ('avg') or not at all (''), got {global_pool!r}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if mlp_hidden is None:   # official GLAMLP: 2/3 of 4 * dim, rounded up to a multiple of 256
            mlp_hidden = 256 * -(-int(embed_dim * 4 * 2 / 3) // 256)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        self.patch_grid = (img_size[0] // 16, img_size[1] // 16)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_grid[0] * self.patch_grid[1], embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = _drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            GLABlock(embed_dim, num_heads, mlp_hidden, dpr[i], use_act_in_conv, use_out_act, norm_eps, use_kernels)
            for i in range(depth)])
        self.norm = RMSNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=16, module=f"blocks.{i}") for i in range(depth)]
        self.init_weights()

    def init_weights(self) -> None:
        """Official scheme: linears N(0, 0.02) with zero bias, then the attention's own Xavier init,
        and a trunc-normal(0.02) position embedding; convs and norms keep PyTorch's defaults."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, GatedLinearAttention):
                m.reset_parameters()
        trunc_normal_(self.pos_embed, std=0.02)

    def set_use_kernels(self, enable: bool = True) -> None:
        """GLA through ``ops.gated_linear_attention`` (True) or the plain-PyTorch reference (False)."""
        _set_use_kernels(self, enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # The official optimizer decays every parameter of 2+ dims, pos_embed included.
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^pos_embed|^patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool: 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        _check_images(x, self.in_chans)
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        x = x + resize_pos_embed(self.pos_embed, self.patch_grid, hw)
        return self.pos_drop(x), hw

    def _block(self, blk: GLABlock, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(blk, x, hw)
        return blk(x, hw)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs as [B, C, H/16, W/16] maps (``output_fmt='NLC'``: tokens [B, N, C]);
        ``norm`` applies the final RMSNorm to them. Unless ``intermediates_only``, also returns
        the normed final tokens that ``forward_head`` takes."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt: 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, hw = self._embed(x)
        B = x.shape[0]
        blocks = self.blocks if not (stop_early or intermediates_only) else self.blocks[:max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = self._block(blk, x, hw)
            if i in take_indices:
                y = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    y = y.transpose(1, 2).reshape(B, -1, hw[0], hw[1])
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> normed tokens [B, H/16 * W/16, C]."""
        x, hw = self._embed(x)
        for blk in self.blocks:
            x = self._block(blk, x, hw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class HierBlock(nn.Module):
    """ViG-H block (official ``VSSBlock`` with ``GLA2D``) on channels-last maps [B, H, W, C]:
    LayerNorm, BiGLA, LayerNorm, SwiGLU MLP."""

    def __init__(self, dim: int, num_heads: int, drop_path: float = 0.0, use_act_in_conv: bool = False,
                 use_out_act: bool = False, mlp_drop: float = 0.0, use_kernels: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = GatedLinearAttention(dim, num_heads, use_act_in_conv=use_act_in_conv, use_out_act=use_out_act,
                                       eval_halving=False, use_kernels=use_kernels)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        hidden = 32 * -(-int(dim * 4 * 2 / 3) // 32)   # official gMlp: 2/3 of 4 * dim, multiple of 32
        self.mlp = GatedMlp(dim, hidden, mlp_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class HierStage(nn.Module):
    """``blocks`` on [B, H, W, C], then ``downsample`` (conv k3 s2 + LN2d, NCHW) to the next stage."""

    def __init__(self, blocks: List[HierBlock], downsample: Optional[nn.Module]):
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample if downsample is not None else nn.Identity()

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward_downsample(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.downsample, nn.Identity):
            return x
        return self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_downsample(self.forward_blocks(x))


class HierHead(nn.Module):
    """``classifier.norm`` (LayerNorm over channels) and ``classifier.head``; pooling is the mean."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()


class HierViG(nn.Module):
    """Hierarchical ViG-H. Input [B, in_chans, H, W]; stage i output [B, C_i, H/2^(i+2), W/2^(i+2)]."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        dims: Union[int, Sequence[int]] = 96,
        depths: Sequence[int] = (2, 2, 9, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        use_act_in_conv: bool = False,
        use_out_act: bool = False,
        drop_rate: float = 0.0,
        mlp_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        use_kernels: bool = True,
    ):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool: ViG-H pools by the mean ('avg') or not at all (''), got {global_pool!r}")
        n = len(depths)
        dims = [int(dims * 2 ** i) for i in range(n)] if isinstance(dims, int) else list(dims)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.dims = dims
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = nn.Sequential(   # official v2 stem; the Identity slots keep its indices
            nn.Conv2d(in_chans, dims[0] // 2, 3, 2, 1), nn.Identity(), LayerNorm2d(dims[0] // 2), nn.Identity(),
            nn.GELU(), nn.Conv2d(dims[0] // 2, dims[0], 3, 2, 1), nn.Identity(), LayerNorm2d(dims[0]))
        total = sum(depths)
        dpr = _drop_path_rates(drop_path_rate, total)
        self.layers = nn.ModuleList()
        self.feature_info = []
        cur = 0
        for i in range(n):
            downsample = nn.Sequential(
                nn.Identity(), nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1), nn.Identity(), LayerNorm2d(dims[i + 1]),
            ) if i < n - 1 else None
            blocks = [HierBlock(dims[i], num_heads[i], dpr[cur + j], use_act_in_conv, use_out_act, mlp_drop_rate,
                                use_kernels) for j in range(depths[i])]
            self.layers.append(HierStage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"layers.{i}"))
            cur += depths[i]
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = HierHead(dims[-1], num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """Official scheme: trunc-normal(0.02) linears with zero bias (overriding the attention's
        Xavier init of its linears, as the official ``apply`` does; its dw conv keeps Xavier), unit
        LayerNorms; convs keep PyTorch's defaults."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_use_kernels(self, enable: bool = True) -> None:
        """GLA through ``ops.gated_linear_attention`` (True) or the plain-PyTorch reference (False)."""
        _set_use_kernels(self, enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        blocks = r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.blocks\.(\d+)", None), (r"^layers\.(\d+)\.downsample", (99998,))]
        return dict(stem=r"^patch_embed", blocks=blocks if coarse else blocks + [(r"^classifier\.norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool: 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.classifier.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.in_chans)
        return self.patch_embed(x).permute(0, 2, 3, 1)   # channels-last [B, H/4, W/4, C0]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs before each downsample, [B, C_i, H/2^(i+2), W/2^(i+2)] (``'NHWC'``:
        channels-last); ``norm`` applies ``classifier.norm`` to the last stage's. Unless
        ``intermediates_only``, also returns the normed final map that ``forward_head`` takes."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt: 'NCHW' or 'NHWC', got {output_fmt!r}")
        n = len(self.layers)
        take_indices, max_index = feature_take_indices(n, indices)
        x = self._stem(x)
        last = max_index if stop_early or intermediates_only else n - 1
        intermediates = []
        for i in range(last + 1):
            stage = self.layers[i]
            x = stage.forward_blocks(x)
            if i in take_indices:
                y = self.classifier.norm(x) if norm and i == n - 1 else x
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
            if i < last:
                x = stage.forward_downsample(x)
        if intermediates_only:
            return intermediates
        return self.classifier.norm(x).permute(0, 3, 1, 2), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if max_index < len(self.dims) - 1 or prune_norm:
            self.classifier.norm = nn.Identity()
        self.num_features = self.head_hidden_size = self.dims[max_index]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> normed last-stage map [B, C_last, H/32, W/32]."""
        x = self._stem(x)
        for stage in self.layers:
            x = stage(x)
        return self.classifier.norm(x).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Official checkpoint -> this model. Unwraps ``{'model': sd}`` (the URL/hub loaders do not),
    strips DDP/compile prefixes, resizes ``pos_embed`` bicubically when the model's token grid
    differs from the checkpoint's (square) one, and views ``Linear2d`` weights saved as 1x1 convs
    [out, in, 1, 1] as [out, in]. Key names are the official ones; nothing is dropped."""
    for key in ("model", "state_dict"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    own = model.state_dict() if model is not None else {}
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        target = own.get(k)
        if k == "pos_embed" and target is not None and v.shape != target.shape:
            side = int(round(v.shape[1] ** 0.5))
            v = resize_pos_embed(v, (side, side), model.patch_grid)
        elif target is not None and v.dim() == 4 and target.dim() == 2 and v.shape[2:] == (1, 1):
            v = v.flatten(1)
        out[k] = v
    return out


def _create(cls, variant: str, pretrained: bool = False, default_out_indices=(0, 1, 2, 3), **kwargs):
    out_indices = kwargs.pop("out_indices", default_out_indices)
    return build_model_with_cfg(
        cls, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _cfg(hf_hub_filename: str, **kwargs) -> dict:
    return {
        "url": "", "hf_hub_id": "hustvl/ViG", "hf_hub_filename": hf_hub_filename,
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None, "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.proj.0", "classifier": "head",
        **kwargs,
    }


def _cfg_h(hf_hub_filename: str, **kwargs) -> dict:
    return _cfg(hf_hub_filename, pool_size=(7, 7), first_conv="patch_embed.0", classifier="classifier.head", **kwargs)


# Official releases (HF hustvl/ViG): eval resize 256 -> center crop 224 (crop_pct 0.875), bicubic.
default_cfgs = generate_default_cfgs({
    "vig_tiny.in1k": _cfg("vig_t_77p2acc.pth"),
    "vig_small.in1k": _cfg("vig_s_81p7acc.pth"),
    "vig_base.in1k": _cfg("vig_b_82p6acc.pth"),
    "vig_h_tiny.in1k": _cfg_h("vig_h_t_82p8acc.pth"),
    "vig_h_small.in1k": _cfg_h("vig_h_s_83p8acc.pth"),
    "vig_h_base.in1k": _cfg_h("vig_h_b_84p2acc.pth"),
})


def _vig(variant: str, pretrained: bool, **kwargs) -> ViG:
    # drop_path_rate is each variant's training value (configs/vig/*.yaml); pass drop_path_rate=... to override.
    # features_only: the last three blocks by default, as timm's ViT.
    return _create(ViG, variant, pretrained, default_out_indices=3, **kwargs)


def _vig_h(variant: str, pretrained: bool, **kwargs) -> HierViG:
    return _create(HierViG, variant, pretrained, **kwargs)


@register_model
def vig_tiny(pretrained: bool = False, **kwargs) -> ViG:
    """ViG-T: 192 channels, 3 heads; SiLU after the local conv and before ``o_proj`` (ViG-T only)."""
    args = dict(embed_dim=192, depth=12, num_heads=3, use_act_in_conv=True, use_out_act=True, drop_path_rate=0.0)
    return _vig("vig_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vig_small(pretrained: bool = False, **kwargs) -> ViG:
    args = dict(embed_dim=384, depth=12, num_heads=6, drop_path_rate=0.2)
    return _vig("vig_small", pretrained, **dict(args, **kwargs))


@register_model
def vig_base(pretrained: bool = False, **kwargs) -> ViG:
    args = dict(embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.5)
    return _vig("vig_base", pretrained, **dict(args, **kwargs))


@register_model
def vig_h_tiny(pretrained: bool = False, **kwargs) -> HierViG:
    args = dict(dims=96, depths=(2, 2, 5, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2)
    return _vig_h("vig_h_tiny", pretrained, **dict(args, **kwargs))


@register_model
def vig_h_small(pretrained: bool = False, **kwargs) -> HierViG:
    args = dict(dims=96, depths=(2, 2, 17, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3)
    return _vig_h("vig_h_small", pretrained, **dict(args, **kwargs))


@register_model
def vig_h_base(pretrained: bool = False, **kwargs) -> HierViG:
    args = dict(dims=128, depths=(2, 2, 17, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.6)
    return _vig_h("vig_h_base", pretrained, **dict(args, **kwargs))
