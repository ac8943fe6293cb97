"""foveal.ops: fused Triton kernels for structured sparse and linear attention.

Each op lives in its own folder (``ops/<op>/``) with its public function, a plain-PyTorch
reference and its Triton kernels. Depends only on torch and triton.
"""
from .neighborhood import na1d, na2d, na3d, neighborhood_attention

__all__ = ["na1d", "na2d", "na3d", "neighborhood_attention"]
