"""1-D neighborhood attention: Triton forward kernel vs the fp64 reference, and argument errors."""
import random

import pytest
import torch

import ops
from ops.neighborhood.reference import neighborhood_attention_reference
from tests.ops.helpers import assert_close, fresh_generator, kernel_dtypes, poisoned, randn


def _case(rng: random.Random):
    length = rng.randint(9, 70)
    return dict(batch=rng.randint(1, 2), length=length, heads=rng.choice([1, 2, 4]),
                kv_div=rng.choice([1, 2]), dim=rng.choice([16, 32]), dim_v=rng.choice([16, 32]),
                kernel=rng.randint(2, min(length, 19)))


@pytest.mark.kernel
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("trial", range(3))
def test_forward_kernel_matches_fp64_reference(dtype, trial, device):
    from ops.neighborhood.kernels import na1d_forward

    gen, seed = fresh_generator()
    c = _case(random.Random(seed))
    heads, kv_heads = c["heads"], max(1, c["heads"] // c["kv_div"])
    q = randn(c["batch"], c["length"], heads, c["dim"], dtype=dtype, device=device, gen=gen)
    k = randn(c["batch"], c["length"], kv_heads, c["dim"], dtype=dtype, device=device, gen=gen)
    v = randn(c["batch"], c["length"], kv_heads, c["dim_v"], dtype=dtype, device=device, gen=gen)
    out = poisoned(c["batch"], c["length"], heads, c["dim_v"], dtype=dtype, device=device)
    lse = poisoned(c["batch"], c["length"], heads, dtype=torch.float32, device=device)
    scale = c["dim"] ** -0.5
    na1d_forward(q, k, v, c["kernel"], scale, out=out, lse=lse)
    ref_out, ref_lse = neighborhood_attention_reference(
        q.double(), k.double(), v.double(), (c["kernel"],), (1,), (1,), (False,), scale)
    assert_close(out, ref_out, dtype, f"output {c}", seed)
    assert_close(lse, ref_lse, torch.float32 if dtype == torch.float32 else dtype, f"lse {c}", seed)


@pytest.mark.kernel
def test_public_op_runs_kernel_on_strided_inputs(device):
    gen, seed = fresh_generator()
    qkv = randn(2, 33, 3, 4, 16, dtype=torch.float32, device=device, gen=gen)   # packed, non-contiguous
    q, k, v = qkv.unbind(2)
    out, lse = ops.na1d(q, k, v, kernel_size=7, return_lse=True)
    ref_out, ref_lse = neighborhood_attention_reference(
        q.double(), k.double(), v.double(), (7,), (1,), (1,), (False,), 16 ** -0.5)
    assert_close(out, ref_out, torch.float32, "strided output", seed)
    assert_close(lse, ref_lse, torch.float32, "strided lse", seed)


@pytest.mark.kernel
def test_full_window_equals_dense_attention(device):
    gen, seed = fresh_generator()
    q, k, v = (randn(1, 24, 2, 32, dtype=torch.float32, device=device, gen=gen) for _ in range(3))
    out = ops.na1d(q, k, v, kernel_size=24)
    dense = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2).double() for t in (q, k, v)))
    assert_close(out, dense.transpose(1, 2), torch.float32, "kernel = input length", seed)


def test_kernel_would_catch_a_wrong_window():
    """The comparison is sharp enough to fail a kernel that is off by one in its window."""
    gen, seed = fresh_generator()
    q, k, v = (randn(1, 40, 2, 16, dtype=torch.float64, device="cpu", gen=gen) for _ in range(3))
    right, _ = neighborhood_attention_reference(q, k, v, (7,), (1,), (1,), (False,), 0.25)
    wrong, _ = neighborhood_attention_reference(q, k, v, (8,), (1,), (1,), (False,), 0.25)
    with pytest.raises(AssertionError, match="relative error"):
        assert_close(wrong.float(), right, torch.float16, "deliberately wrong kernel", seed)


def test_reference_gradcheck():
    gen, _ = fresh_generator()
    q, k, v = (randn(1, 11, 2, 8, dtype=torch.float64, device="cpu", gen=gen, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda q, k, v: neighborhood_attention_reference(q, k, v, (5,), (1,), (1,), (False,), 0.3)[0], (q, k, v))


def _qkv(length=16, dtype=torch.float32, device="cpu"):
    return (torch.randn(1, length, 2, 16, dtype=dtype, device=device) for _ in range(3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=17), r"kernel_size \(17\) must be <= the input length \(16\)"),
    (dict(kernel_size=0), r"kernel_size must be >= 1"),
    (dict(kernel_size=5, dilation=4), r"kernel_size \* dilation \(5 \* 4\) must be <= the input length"),
    (dict(kernel_size=3, stride=4), r"stride \(4\) must be <= kernel_size \(3\)"),
    (dict(kernel_size=(3, 3)), r"kernel_size has 2 entries but the input has 1 spatial"),
])
def test_bad_window_arguments_raise_named_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.na1d(*_qkv(), **kwargs)


def test_wrong_rank_raises():
    q = torch.randn(16, 2, 16)
    with pytest.raises(ValueError, match="query must have 4 or 5 or 6 dimensions"):
        ops.neighborhood_attention(q, q, q, kernel_size=3)
    q2 = torch.randn(1, 8, 8, 2, 16)
    with pytest.raises(ValueError, match="query must have 1 spatial axes"):
        ops.na1d(q2, q2, q2, kernel_size=3)


def test_mismatched_dtypes_raise():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=r"one dtype, got query=torch.float32, key=torch.float16"):
        ops.na1d(q, k.half(), v, kernel_size=3)


def test_mismatched_devices_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"one device, got query on cpu, key on meta"):
        ops.na1d(q, k.to("meta"), v, kernel_size=3)


def test_bad_head_dims_raise():
    q = torch.randn(1, 16, 2, 12)
    with pytest.raises(ValueError, match="head_dim must be a multiple of 8"):
        ops.na1d(q, q, q, kernel_size=3)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"query heads \(2\) must be a multiple of key/value heads \(3\)"):
        ops.na1d(q, torch.randn(1, 16, 3, 16), torch.randn(1, 16, 3, 16), kernel_size=3)
