"""Building blocks shared by every op: dispatch, argument checks, torch.library registration."""
from .args import (as_tuple, check_floating, check_item_span, check_positive, check_rank, check_same_device,
                   check_same_dtype, check_span)
from .dispatch import dot_precision, has_triton, interpret_mode, tune_configs, use_kernels, use_triton
from .library import LIBRARY, eager_autograd, op_name, op_or_impl

__all__ = [
    "LIBRARY",
    "as_tuple",
    "check_floating",
    "check_item_span",
    "check_positive",
    "check_rank",
    "check_same_device",
    "check_same_dtype",
    "check_span",
    "dot_precision",
    "eager_autograd",
    "has_triton",
    "interpret_mode",
    "op_name",
    "op_or_impl",
    "tune_configs",
    "use_kernels",
    "use_triton",
]
