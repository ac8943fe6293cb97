"""foveal.ops: fused Triton kernels for structured sparse and linear attention.

Each op lives in its own folder (``ops/<op>/``) with its public function, a plain-PyTorch
reference and its Triton kernels. Depends only on torch and triton.
"""
from .block_sparse import block_sparse_attention
from .gla import gated_linear_attention
from .lka import depthwise_conv2d, large_kernel_attention, separable_large_kernel_attention
from .neighborhood import na1d, na2d, na3d, neighborhood_attention
from .norm_gate import norm_gate_mix
from .radial import radial_attention, radial_block_mask
from .routing import routing_attention

__all__ = ["block_sparse_attention", "depthwise_conv2d", "gated_linear_attention", "large_kernel_attention", "na1d",
           "na2d", "na3d", "neighborhood_attention", "norm_gate_mix", "radial_attention", "radial_block_mask",
           "routing_attention", "separable_large_kernel_attention"]
