"""Launcher: the autotuner picks once per problem; on the GPU later calls launch the compiled
kernel directly (no jit binder), under the interpreter they take the jit path."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

import ops.common.dispatch as dispatch
from ops.common import interpret_mode, tune_configs
from ops.common.tuning import Launcher, wide_offsets

# the interpreter cannot time configs: one there, two on the GPU
_CONFIGS = [triton.Config({"BLOCK": 16}, num_warps=1)] + ([] if interpret_mode() else
                                                         [triton.Config({"BLOCK": 32}, num_warps=1)])


@triton.autotune(configs=_CONFIGS, key=["n"])
@triton.jit
def _scale_kernel(X, Y, n, factor, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n) * factor, mask=offs < n)


@pytest.mark.kernel
def test_second_call_skips_the_autotuner(device, monkeypatch):
    launcher = Launcher(_scale_kernel)
    x = torch.randn(100, device=device)
    grid = lambda meta: (triton.cdiv(100, meta["BLOCK"]),)   # noqa: E731
    y = torch.full_like(x, float("nan"))
    launcher[grid](x, y, 100, 2.0)
    torch.testing.assert_close(y, 2 * x)
    assert len(launcher.configs) == 1

    def no_autotuning(*args, **kwargs):
        raise AssertionError("the autotuner ran again for a known problem")
    monkeypatch.setattr(type(_scale_kernel), "run", no_autotuning)
    if device == "cuda":   # the direct path must not even go through the jit
        monkeypatch.setattr(type(_scale_kernel.fn), "run", no_autotuning)
    y2 = torch.full_like(x, float("nan"))
    launcher[grid](x, y2, 100, -3.0)   # same problem, new data and scale: direct launch
    torch.testing.assert_close(y2, -3 * x)
    with pytest.raises(AssertionError, match="autotuner ran again"):
        launcher[grid](x, y2, 99, 1.0)   # a new size is a new problem


@pytest.mark.kernel
def test_repeat_calls_of_the_ops_go_direct_and_agree(device):
    """NA and BRA launch through Launcher: the second call of a problem takes the direct path
    (the launchers then know it) and must reproduce the first call exactly."""
    import ops
    from ops.common import block_sparse
    from ops.neighborhood import kernels as na_kernels

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 9, 10, 2, 16, generator=gen).to(device) for _ in range(3))
    first = ops.na2d(q, k, v, kernel_size=5, stride=2)
    assert na_kernels._na_fwd.configs, "the NA forward did not go through its launcher"
    torch.testing.assert_close(ops.na2d(q, k, v, kernel_size=5, stride=2), first, rtol=0, atol=0)

    x, y, z = (torch.randn(1, 8, 8, 32, generator=gen).to(device) for _ in range(3))
    first = ops.routing_attention(x, y, z, 2, 2)
    assert block_sparse._bs_fwd.configs, "the block-sparse forward did not go through its launcher"
    torch.testing.assert_close(ops.routing_attention(x, y, z, 2, 2), first, rtol=0, atol=0)


@triton.jit
def _offset_kernel(X, Y, n, shift, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n) + shift, mask=offs < n)


@pytest.mark.kernel
def test_plain_jit_kernel_direct_launches(device, monkeypatch):
    """A non-autotuned kernel: the first call compiles through the jit; on the GPU the next calls
    of the same problem launch the compiled kernel (new data, new float argument), and what
    Triton specializes on (an int of 1, a misaligned pointer) makes a new problem."""
    launcher = Launcher(_offset_kernel)
    x = torch.randn(100, device=device)
    y = torch.full_like(x, float("nan"))
    launcher[(4,)](x, y, 100, 1.5, BLOCK=32)
    torch.testing.assert_close(y, x + 1.5)
    assert len(launcher.compiled) == (1 if device == "cuda" else 0)
    if device == "cuda":
        def no_jit(*args, **kwargs):
            raise AssertionError("a known problem went through the jit")
        monkeypatch.setattr(type(_offset_kernel), "run", no_jit)
    x2 = torch.randn(100, device=device)
    y2 = torch.full_like(x, float("nan"))
    launcher[(4,)](x2, y2, 100, -2.0, BLOCK=32)
    torch.testing.assert_close(y2, x2 - 2.0)
    if device == "cuda":
        monkeypatch.undo()
        y3 = torch.full_like(x, float("nan"))
        launcher[(4,)](x2[1:], y3, 99, 0.5, BLOCK=32)   # misaligned source: another specialization
        torch.testing.assert_close(y3[:99], x2[1:] + 0.5)
        launcher[(1,)](x2, y3, 1, 0.25, BLOCK=32)   # n == 1 is specialized by Triton
        assert y3[0].item() == (x2[0] + 0.25).item()   # both fp32 (a Python-float sum rounds differently)
        assert len(launcher.compiled) == 3


def test_problem_keys_follow_triton_specialization():
    """Keys of the direct-launch cache: what Triton specializes on (integers by value, tensor dtype
    and 16-byte alignment, keyword meta-parameters) changes the key; data and floats do not; a call
    that does not fit the launch site's layout is reported (None) rather than mis-keyed."""
    from ops.common.tuning import _ArgLayout, _problem_key

    x = torch.zeros(64)
    layout = _ArgLayout((x, x, 8, 0.5, None))
    base = layout.key((x, x, 8, 0.5, None), {"BLOCK": 16})
    assert layout.key((torch.ones(64), torch.zeros(64), 8, -3.0, None), {"BLOCK": 16}) == base
    assert layout.key((x, x, 9, 0.5, None), {"BLOCK": 16}) != base                   # an int
    assert layout.key((x, x, 1, 0.5, None), {"BLOCK": 16}) != base                   # == 1 is specialized
    assert layout.key((x, x.half(), 8, 0.5, None), {"BLOCK": 16}) != base            # a dtype
    assert layout.key((x, x[1:], 8, 0.5, None), {"BLOCK": 16}) != base               # alignment
    assert layout.key((x, x, 8, 0.5, x), {"BLOCK": 16}) != base                      # None -> tensor
    assert layout.key((x, x, 8, 0.5, None), {"BLOCK": 32}) != base                   # meta-parameter
    assert layout.key((x, 3, 8, 0.5, None), {"BLOCK": 16}) is None                   # not the site's layout
    assert layout.key((x, x, 8), {"BLOCK": 16}) is None                              # other arity
    assert _problem_key((x, 8, 0.5), {}) == _problem_key((torch.ones(64), 8, 2.0), {})
    assert _problem_key((x, 8, 0.5), {}) != _problem_key((x[1:], 8, 0.5), {})


def test_host_integer_helpers_match_triton():
    from ops.common.tuning import cdiv, next_power_of_2

    assert all(next_power_of_2(n) == triton.next_power_of_2(n) for n in range(1, 3000))
    assert all(cdiv(a, b) == triton.cdiv(a, b) for a in range(0, 200) for b in range(1, 30))


def test_quick_tune_keeps_the_extreme_candidates(monkeypatch):
    """FOVEAL_QUICK_TUNE (GPU test runs) narrows every autotuned kernel's list to its first and
    last candidates; without it the list is untouched."""
    configs = [triton.Config({"B": b}, num_warps=w) for b, w in [(16, 2), (32, 4), (64, 4), (128, 8)]]
    monkeypatch.setattr(dispatch, "_QUICK_TUNE", False)
    assert tune_configs(configs) == configs
    monkeypatch.setattr(dispatch, "_QUICK_TUNE", True)
    assert tune_configs(configs) == [configs[0], configs[-1]]
    assert tune_configs(configs[:2]) == configs[:2]


@pytest.mark.kernel
def test_site_keyed_launches(device, monkeypatch):
    """``Launcher.launch``: a caller-keyed site compiles once, then (GPU) launches its compiled
    kernel without the jit or the generic key; another site is another problem. Under the
    interpreter nothing is compiled, so no site is remembered and every call takes the jit."""
    launcher = Launcher(_offset_kernel)
    x = torch.randn(100, device=device)
    y = torch.full_like(x, float("nan"))
    launcher.launch(("n100",), (4,), (x, y, 100, 1.5), dict(BLOCK=32))
    torch.testing.assert_close(y, x + 1.5)
    assert list(launcher.sites) == ([("n100",)] if device == "cuda" else [])
    if device == "cuda":
        def no_jit(*args, **kwargs):
            raise AssertionError("a known site went through the jit")
        monkeypatch.setattr(type(_offset_kernel), "run", no_jit)
        monkeypatch.setattr(launcher, "_launch", no_jit)
    y2 = torch.full_like(x, float("nan"))
    launcher.launch(("n100",), (4,), (x, y2, 100, -2.0), dict(BLOCK=32))
    torch.testing.assert_close(y2, x - 2.0)
    if device == "cuda":
        monkeypatch.undo()
        y3 = torch.full_like(x, float("nan"))
        launcher.launch(("n1",), (1,), (x, y3, 1, 0.25), dict(BLOCK=32))   # n == 1: its own specialization
        assert y3[0].item() == (x[0] + 0.25).item() and torch.isnan(y3[1:]).all()
        assert len(launcher.sites) == 2 and len(launcher.compiled) == 2


@pytest.mark.kernel
def test_bound_launch(device, monkeypatch):
    """``Launcher.bind``: a launch called with its tensors only. Once its site is compiled (GPU)
    it calls the compiled kernel's launcher itself, through neither the site table nor the jit;
    under the interpreter every call goes through ``Launcher.launch``."""
    launcher = Launcher(_offset_kernel)
    bound = launcher.bind(("n100",), (4,), (100, 1.5), dict(BLOCK=32))
    x = torch.randn(100, device=device)
    y = torch.full_like(x, float("nan"))
    bound(x, y)
    torch.testing.assert_close(y, x + 1.5)
    assert (bound.direct is not None) == (device == "cuda")
    if device == "cuda":
        def no_jit(*args, **kwargs):
            raise AssertionError("a compiled bound launch went through the launcher or the jit")
        monkeypatch.setattr(type(_offset_kernel), "run", no_jit)
        monkeypatch.setattr(launcher, "launch", no_jit)
    x2 = torch.randn(100, device=device)
    y2 = torch.full_like(x, float("nan"))
    bound(x2, y2)
    torch.testing.assert_close(y2, x2 + 1.5)


def test_alignment_key():
    """The tensor part of a site key: one 0 when every pointer is 16-byte aligned, else each
    pointer's offset (which tensor is misaligned matters to Triton)."""
    from ops.common.tuning import alignment

    x = torch.zeros(64)
    assert alignment(x, x) == (0,)
    assert alignment(x, x[1:]) == (0, 4) and alignment(x[1:], x) == (4, 0)


def test_wide_offsets():
    """64-bit batch offsets exactly when some layout's last element lies 2**31 or more past its first."""
    assert not wide_offsets(((2, 2**30), (2**30, 1)))              # last element at 2**31 - 1
    assert wide_offsets(((2, 2**30 + 1), (2**30 + 1, 1)))          # at 2**31 + 1
    assert wide_offsets(None, ((3, 4), (2**30, 1)), ((1, 1), (1, 1)))
    assert not wide_offsets(((2**20, 64), (0, 1)))                   # expanded batch: stride 0
    assert not wide_offsets(((0, 2**31), (2**31, 1)))                # empty
