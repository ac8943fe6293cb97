"""Large kernel attention and its separable family: Triton kernels vs the fp64 reference."""
from __future__ import annotations

import pytest
import torch

import ops
from ops.lka import (depthwise_conv2d_reference, large_kernel_attention_reference, lka_chain_reference,
                     lska_kernel_sizes)
from ops.lka.kernels import dw_conv, dw_conv_weight_grad, pw_gate, pw_gate_backward

from .helpers import TOLERANCE, assert_close, far_batch_views, fresh_generator, kernel_dtypes, poisoned, randn

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _lka_inputs(b, c, h, w, dtype, device, gen, fmt=torch.contiguous_format, requires_grad=False):
    x = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=fmt)
    shapes = [(c, 1, 5, 5), (c,), (c, 1, 7, 7), (c,), (c, c, 1, 1), (c,)]
    scales = [0.2, 1.0, 0.15, 1.0, c ** -0.5, 1.0]
    weights = [(randn(*s, dtype=torch.float32, device="cpu", gen=gen) * k).to(device=device, dtype=dtype)
               for s, k in zip(shapes, scales)]
    if requires_grad:
        x.requires_grad_()
        for t in weights:
            t.requires_grad_()
    return x, weights


def _fp64(ts):
    return [t.detach().double().requires_grad_(t.requires_grad) for t in ts]


@pytest.mark.kernel
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_lka_forward_kernels(device, dtype, layout):
    """The forward kernels (dw5x5, dw7x7d3, then 1x1 + gate), odd sizes, NaN-poisoned outputs."""
    gen, seed = fresh_generator()
    b, c, h, w = (2, 20, 13, 11) if device == "cpu" else (3, 72, 29, 37)
    x, (w0, b0, ws, bs, w1, b1) = _lka_inputs(b, c, h, w, dtype, device, gen, LAYOUTS[layout])
    a = dw_conv(x, w0, b0, 1, out=poisoned(b, c, h, w, dtype=dtype, device=device).contiguous(
        memory_format=LAYOUTS[layout]))
    a_ref = depthwise_conv2d_reference(x.double(), w0.double(), b0.double(), 1)
    assert_close(a, a_ref, dtype, f"dw5x5 {layout}", seed)
    s = dw_conv(a, ws, bs, 3, out=poisoned(b, c, h, w, dtype=dtype, device=device))
    out = pw_gate(s, w1, b1, x, out=poisoned(b, c, h, w, dtype=dtype, device=device))
    ref = large_kernel_attention_reference(*_fp64([x, w0, b0, ws, bs, w1, b1]))
    assert_close(out, ref, dtype, f"lka forward {layout}", seed)
    # the public op keeps x's memory format
    y = ops.large_kernel_attention(x, w0, b0, ws, bs, w1, b1)
    assert y.is_contiguous(memory_format=LAYOUTS[layout])
    assert_close(y, ref, dtype, f"ops.large_kernel_attention {layout}", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("case", [("nchw", torch.float32), ("channels_last", torch.float16)], ids=str)
def test_lka_backward(device, case):
    """Gradients of x and of every weight and bias through the Triton backward kernels."""
    layout, dtype = case
    gen, seed = fresh_generator()
    b, c, h, w = (2, 18, 11, 13) if device == "cpu" else (2, 96, 23, 31)
    x, params = _lka_inputs(b, c, h, w, dtype, device, gen, LAYOUTS[layout], requires_grad=True)
    out = ops.large_kernel_attention(x, *params)
    grad = randn(*out.shape, dtype=dtype, device=device, gen=gen)
    grads = torch.autograd.grad(out, [x, *params], grad)
    leaves = _fp64([x, *params])
    ref = large_kernel_attention_reference(*leaves)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    names = ["x", "conv0_weight", "conv0_bias", "spatial_weight", "spatial_bias", "conv1_weight", "conv1_bias"]
    for name, g, r in zip(names, grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, r, dtype, f"grad {name} ({layout})", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_lka_half_activations_fp32_weights(device, layout):
    """Autocast's case: half-precision x with fp32 parameters. The kernels take the weights as they
    are (no casts) and the weight gradients come back in fp32; checked against fp64 with the
    half-precision tolerance (the weights are not rounded to half first, so no looser)."""
    gen, seed = fresh_generator()
    b, c, h, w = (2, 18, 11, 13) if device == "cpu" else (2, 96, 23, 31)
    dtype = torch.float16
    x, params = _lka_inputs(b, c, h, w, dtype, device, gen, LAYOUTS[layout], requires_grad=True)
    params = [p.detach().float().requires_grad_() for p in params]
    out = ops.large_kernel_attention(x, *params)
    assert out.dtype == dtype and out.is_contiguous(memory_format=LAYOUTS[layout])
    grad = randn(*out.shape, dtype=dtype, device=device, gen=gen)
    grads = torch.autograd.grad(out, [x, *params], grad)
    leaves = _fp64([x, *params])
    ref = large_kernel_attention_reference(*leaves)
    assert_close(out, ref, dtype, f"forward ({layout})", seed)
    ref_grads = torch.autograd.grad(ref, leaves, grad.double())
    names = ["x", "conv0_weight", "conv0_bias", "spatial_weight", "spatial_bias", "conv1_weight", "conv1_bias"]
    for name, g, r, leaf in zip(names, grads, ref_grads, [x, *params]):
        assert g.dtype == leaf.dtype, f"grad {name}: {g.dtype} for a {leaf.dtype} input"
        assert_close(g, r, dtype, f"grad {name} ({layout})", seed)


def _check_weight_grad(g, x, wt, dil, dtype, what, seed):
    """``dw_conv_weight_grad`` (weight and bias) against autograd through the fp64 reference."""
    xl, wl = x.double().requires_grad_(), wt.double().requires_grad_()
    bl = torch.zeros(wt.shape[0], dtype=torch.float64, device=x.device, requires_grad=True)
    dw_ref, db_ref = torch.autograd.grad(depthwise_conv2d_reference(xl, wl, bl, dil), (wl, bl), g.double())
    dw, db = dw_conv_weight_grad(g, x, tuple(wt.shape[-2:]), dil)
    assert_close(dw, dw_ref, dtype, f"weight grad {what}", seed)
    assert_close(db, db_ref, dtype, f"bias grad {what}", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("conv", [((5, 5), 1, False, False), ((7, 7), 3, True, True), ((11, 1), 3, False, True)],
                         ids=str)
def test_dw_conv_row_blocks(device, conv):
    """The row-block depthwise kernels (conv and weight gradient) over several row blocks,
    dilation phases, column strips and channel blocks (sizes not divisible by any of them),
    flipped kernels and the residual input; NaN-poisoned outputs, both layouts."""
    (kh, kw), dil, flip, residual = conv
    gen, seed = fresh_generator()
    dtype = torch.float32
    b, c, h, w = (1, 40, 19, 37) if device == "cpu" else (2, 200, 61, 75)
    for fmt in LAYOUTS.values():
        x = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=fmt)
        wt = randn(c, 1, kh, kw, dtype=dtype, device=device, gen=gen)
        bias = None if flip else randn(c, dtype=dtype, device=device, gen=gen)
        r = randn(b, c, h, w, dtype=dtype, device=device, gen=gen) if residual else None
        out = dw_conv(x, wt, bias, dil, flip=flip, residual=r,
                      out=poisoned(b, c, h, w, dtype=dtype, device=device).contiguous(memory_format=fmt))
        ref = depthwise_conv2d_reference(x.double(), (wt.flip(-1, -2) if flip else wt).double(),
                                         None if bias is None else bias.double(), dil)
        if r is not None:
            ref = ref + r.double()
        assert_close(out, ref, dtype, f"dw_conv {kh}x{kw} d{dil} flip={flip} {fmt}", seed)
        # the weight gradient walks the same row blocks (as split items)
        g = randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=fmt)
        _check_weight_grad(g, x, wt, dil, dtype, f"{kh}x{kw} d{dil} {fmt}", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("tile", [None, (4, 6), (3, 7)], ids=["rule", "4x6", "3x7"])
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_dw_tiles(device, monkeypatch, tile, dtype):
    """The 5x5 tile kernel (``_dw_tiles_kernel``): forward with bias, flipped with a residual, and
    flipped accumulating in place (residual = out, as the LKA backward calls it), on maps whose
    sizes no tile divides, several channel blocks of 64 or 32, NaN-poisoned outputs, against fp64.
    ``rule``: the launch rule's tiles on a map it sends there in both directions (56 columns); the
    others force a tile shape on a smaller map."""
    import ops.lka.kernels as L
    gen, seed = fresh_generator()
    # 3x7: 96 channels, three 32-channel blocks (one channel per lane, no paired conversion)
    b, c, h, w = (1, 128, 9, 56) if tile is None else (2, 96 if tile == (3, 7) else 128, 11, 13)
    if tile is not None:
        monkeypatch.setattr(L, "_tile_shape", lambda *args: tile)
    x, r = (randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
            for _ in range(2))
    wt = randn(c, 1, 5, 5, dtype=torch.float32, device=device, gen=gen) * 0.2
    bias = randn(c, dtype=torch.float32, device=device, gen=gen)
    for flip in (False, True):
        assert L.dw_tile_launch((b, c, h, w), dtype, (5, 5), 1, flip, not flip, flip, (x.stride(),) * 3) is not None
        out = poisoned(b, c, h, w, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
        dw_conv(x, wt, None if flip else bias, 1, flip=flip, residual=r if flip else None, out=out)
        ref = depthwise_conv2d_reference(x.double(), (wt.flip(-1, -2) if flip else wt).double(),
                                         None if flip else bias.double(), 1)
        assert_close(out, ref + r.double() if flip else ref, dtype, f"tiles {tile} flip={flip}", seed)
    acc = r.clone()
    dw_conv(x, wt, None, 1, flip=True, residual=acc, out=acc)
    ref = depthwise_conv2d_reference(x.double(), wt.flip(-1, -2).double(), None, 1) + r.double()
    assert_close(acc, ref, dtype, f"tiles {tile} in place", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("conv", [((7, 7), 3, (2, 3), 1), ((5, 5), 1, (3, 2), 2), ((1, 7), 3, (2, 4), 1)], ids=str)
@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_dw_wgrad_tiles(device, monkeypatch, conv, dtype):
    """The tile weight gradient (``_dw_wgrad_tiles_kernel``), forced: dilation phases on both axes,
    maps no block divides, a partial channel block, items split over programs; weight and bias
    gradients against autograd through fp64."""
    import ops.lka.kernels as L
    kernel, dil, (th, tw), warps = conv
    monkeypatch.setattr(L, "_wgrad_tile", lambda *args: (th, tw, warps, 4))
    gen, seed = fresh_generator()
    b, c, h, w = (2, 32 * warps + 8, 11, 13) if device == "cpu" else (3, 32 * warps * 3 + 8, 37, 45)
    x, g = (randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
            for _ in range(2))
    wt = randn(c, 1, *kernel, dtype=torch.float32, device=device, gen=gen)
    shape, cl = (b, c, h, w), (x.stride(), x.stride())
    launcher, (nsplit, (grid, _, meta), _) = L.wgrad_program(shape, dtype, kernel, dil, cl, x.device.index)
    assert launcher is L._dw_wgrad_tiles and nsplit >= 2 and meta["BLOCK_C"] == 32 * warps
    assert grid[1] == -(-c // (32 * warps))   # the last channel block partial
    _check_weight_grad(g, x, wt, dil, dtype, f"tiles {kernel} d{dil}", seed)
    # NCHW maps keep the row blocks
    nchw = (x.contiguous().stride(),) * 2
    assert L.wgrad_program(shape, dtype, kernel, dil, nchw, x.device.index)[0] is L._dw_wgrad


def test_dw_wgrad_tile_rule():
    """Which weight gradients take the tile kernel: the LKA's 5x5 (7 columns in 2x8 blocks, 14 and
    more in 4x4) and 7x7 dilation 3 (7 columns, or 28 and more; 4 programs per SM off 28-56
    columns, else 8) on channels-last maps, one warp for fewer than 64 channels."""
    import ops.lka.kernels as L
    cl = lambda c, h, w: (h * w * c, 1, w * c, c)   # noqa: E731

    def program(c, hw, k=(5, 5), dil=1, layout=cl):
        s = layout(c, hw, hw)
        return L.wgrad_program((2, c, hw, hw), torch.bfloat16, k, dil, (s, s), None)

    for c, hw, k, dil in ((64, 56, (5, 5), 1), (320, 14, (5, 5), 1), (128, 28, (7, 7), 3), (32, 56, (7, 7), 3),
                          (512, 7, (5, 5), 1), (256, 7, (7, 7), 3), (64, 128, (5, 5), 1), (64, 128, (7, 7), 3)):
        launcher, (_, (_, _, meta), _) = program(c, hw, k, dil)
        assert launcher is L._dw_wgrad_tiles
        assert (meta["TH"], meta["TW"]) == ((2, 8) if (hw, dil) == (7, 1) else (4, 4))
        assert meta["num_warps"] == (1 if c < 64 else 2) and meta["BLOCK_C"] == 32 * meta["num_warps"]
    assert [L._wgrad_tile((7, 7), 3, 64, w)[3] for w in (7, 28, 56, 128)] == [4, 8, 8, 4]
    for c, hw, k, dil in ((320, 14, (7, 7), 3), (64, 10, (5, 5), 1), (64, 21, (7, 7), 3), (64, 56, (3, 3), 1),
                          (64, 56, (1, 7), 3)):
        assert program(c, hw, k, dil)[0] is L._dw_wgrad
    assert program(64, 56, layout=lambda c, h, w: (c * h * w, h * w, w, 1))[0] is L._dw_wgrad   # NCHW


def test_dw_tile_rule():
    """Which convs the tile kernel takes: undilated 5x5s of whole 64-channel blocks, channels unit-
    stride; forwards from 28 columns, input gradients from 15, and both on 14- and 7-column maps
    (3x7 and 4x7 blocks); of whole 32-channel blocks, forwards from 28 columns."""
    import ops.lka.kernels as L
    cl = lambda c, h, w: (h * w * c, 1, w * c, c)   # noqa: E731
    nchw = lambda c, h, w: (c * h * w, h * w, w, 1)   # noqa: E731

    def takes(c, h, w, k=(5, 5), dil=1, flip=False, strides=cl):
        return L.dw_tile_launch((2, c, h, w), torch.bfloat16, k, dil, flip, not flip, flip,
                                (strides(c, h, w),) * 3) is not None
    assert takes(64, 56, 56) and takes(128, 128, 128) and takes(64, 28, 28) and takes(64, 28, 28, flip=True)
    assert not takes(64, 27, 27) and not takes(64, 13, 13, flip=True)   # other narrow maps: the row blocks
    tile = lambda c, w, flip: L.dw_tile_launch((2, c, w, w), torch.bfloat16, (5, 5), 1, flip, not flip, flip,  # noqa: E731
                                               (cl(c, w, w),) * 3)[2]
    assert all((tile(c, w, f)["TH"], tile(c, w, f)["TW"]) == ((3, 7) if w == 14 else (4, 7))
               for c, w, f in ((320, 14, False), (320, 14, True), (512, 7, False), (256, 7, True)))
    # 32-channel blocks: forwards from 28 columns, in 4x8 blocks
    assert tile(96, 56, False)["BLOCK_C"] == 32 and (tile(32, 28, False)["TH"], tile(32, 28, False)["TW"]) == (4, 8)
    assert not takes(32, 56, 56, flip=True) and not takes(160, 14, 14) and not takes(48, 56, 56)
    assert not takes(64, 56, 56, k=(7, 7), dil=3) and not takes(64, 56, 56, dil=2)
    assert not takes(64, 56, 56, strides=nchw) and not takes(160, 14, 14, flip=True)


@pytest.mark.kernel
@pytest.mark.parametrize("variant", [(False, True), (True, False), (True, True)], ids=["even_c", "packed", "both"])
def test_dw_conv_variants(device, monkeypatch, variant):
    """The row-block conv with unmasked channel blocks (EVEN_C: 64 channels, whole blocks) and bf16
    loads converted in pairs (PACKED: inline PTX, GPU only), forced whatever the launch rule picks;
    forward and flipped with a residual, against fp64."""
    import ops.lka.kernels as L
    packed, even = variant
    if packed and device == "cpu":
        pytest.skip("inline PTX: the interpreter cannot run it")
    monkeypatch.setattr(L, "_conv_variant", lambda *args: variant)
    monkeypatch.setattr(L, "_tile_shape", lambda *args: None)   # the row-block kernel throughout
    gen, seed = fresh_generator()
    dtype = torch.bfloat16 if packed else torch.float32
    b, c, h, w = (1, 64, 13, 19) if device == "cpu" else (2, 128, 29, 45)
    x, r = (randn(b, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
            for _ in range(2))
    for (kh, kw), dil in (((5, 5), 1), ((7, 7), 3)):
        assert L.dw_launch((b, c, h, w), dtype, (kh, kw), dil, False, True, False, (x.stride(),) * 3)[2]["BLOCK_C"] \
            * 2 <= c   # several channel blocks, all whole
        wt = randn(c, 1, kh, kw, dtype=torch.float32, device=device, gen=gen)
        bias = randn(c, dtype=torch.float32, device=device, gen=gen)
        for flip in (False, True):
            out = dw_conv(x, wt, None if flip else bias, dil, flip=flip, residual=r if flip else None,
                          out=poisoned(b, c, h, w, dtype=dtype, device=device).contiguous(
                              memory_format=torch.channels_last))
            ref = depthwise_conv2d_reference(x.double(), (wt.flip(-1, -2) if flip else wt).double(),
                                             None if flip else bias.double(), dil)
            assert_close(out, ref + r.double() if flip else ref, dtype, f"{kh}x{kw} d{dil} flip={flip} {variant}",
                         seed)


@pytest.mark.kernel
@pytest.mark.parametrize("case", [(160, 7, 7, (7, 7), 3), (96, 14, 14, (5, 5), 1), (32, 30, 30, (7, 7), 3),
                                  (80, 30, 33, (3, 3), 1), (136, 13, 14, (3, 3), 1), (24, 9, 40, (1, 3), 1),
                                  (72, 28, 28, (3, 3), 1), (64, 16, 56, (7, 7), 3), (96, 9, 40, (5, 5), 1),
                                  (40, 29, 30, (7, 1), 3), (160, 7, 7, (1, 7), 3), (128, 7, 7, (5, 5), 1)],
                         ids=str)
def test_dw_gpu_launch_rules(device, monkeypatch, case):
    """The row-block kernels with the block shapes and splits the GPU launch rules pick (not the
    interpreter's): 8- and 4-element-per-thread row tiles, 12-row items and >= 1024 pixels per split
    on maps of 28x28 and up. On CPU the rules are forced (Triton's interpreter runs any block
    shape), so CI runs the shapes the H200 runs: a 7x7 map (conv 1024-, gradient 512-element
    tiles, the latter for a 1x7 strip: the 7x7 there takes the tile weight gradient with the GPU's
    splits), 14 columns (512 for both), 30x30 (the large-map gradient rule: a 7x1 strip; the 7x7
    there takes the tile weight gradient too), a 5x5 on a 7x7 map (4x7 tiles, the weight gradient
    in 2x8 blocks), and the small-kernel tiles of 3x3s: [8 cols, 64 channels] on wide maps,
    [4, 128] up to 28 columns, wider strips for few channels (channel counts, rows and columns not
    divisible by them), and their weight gradient's 8-element tiles and 512-pixel splits on 28x28;
    the [8, 32] strips on 2 warps of 56- and 40-column maps (``_narrow_strips``)."""
    import ops.lka.kernels as L
    if device == "cpu":
        monkeypatch.setattr(L, "interpret_mode", lambda: False)
        monkeypatch.setattr(L, "_sm_count", lambda index: 132)
    c, h, w, (kh, kw), dil = case
    gen, seed = fresh_generator()
    dtype = torch.float32
    x, g, r = (randn(1, c, h, w, dtype=dtype, device=device, gen=gen).contiguous(memory_format=torch.channels_last)
               for _ in range(3))
    wt = randn(c, 1, kh, kw, dtype=dtype, device=device, gen=gen)
    bias = randn(c, dtype=dtype, device=device, gen=gen)
    if L._small_kernel((kh, kw), dil):   # the small-kernel tiles are the ones launched
        meta = L.dw_launch((1, c, h, w), dtype, (kh, kw), dil, False, True, False, (x.stride(),) * 3)[2]
        assert (meta["ROWS"], meta["BLOCK_W"], meta["BLOCK_C"]) == L._small_kernel_config(c, h, w)[:3]
    elif w in (40, 56):
        meta = L.dw_launch((1, c, h, w), dtype, (kh, kw), dil, False, True, False, (x.stride(),) * 3)[2]
        assert (meta["BLOCK_W"], meta["BLOCK_C"], meta["num_warps"]) == (8, 32, 2)
    for flip in (False, True):
        out = dw_conv(x, wt, None if flip else bias, dil, flip=flip, residual=r if flip else None,
                      out=poisoned(1, c, h, w, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last))
        ref = depthwise_conv2d_reference(x.double(), (wt.flip(-1, -2) if flip else wt).double(),
                                         None if flip else bias.double(), dil)
        assert_close(out, ref + r.double() if flip else ref, dtype, f"dw_conv {case} flip={flip}", seed)
    _check_weight_grad(g, x, wt, dil, dtype, str(case), seed)


@pytest.mark.kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "row_view"])
@pytest.mark.parametrize("gpu_rule", [False, True], ids=["own_blocks", "gpu_rule"])
def test_pw_gate_channel_blocks(device, monkeypatch, layout, gpu_rule):
    """The 1x1 + gate forward over several input-channel blocks (its pipelined loop) and output-
    channel blocks, the last of each partly masked (80 channels in blocks of 64): flat pixel
    indexing for NCHW and channels-last, per-row strides for a view of the first half of each row; and
    the GPU rule's 128- and 64-pixel tiles (on CPU forced, as the interpreter's rule differs)."""
    import ops.lka.kernels as L
    if gpu_rule and device == "cpu":
        monkeypatch.setattr(L, "interpret_mode", lambda: False)
    gen, seed = fresh_generator()
    c, dtype = 80, torch.float32
    for h, w in ((9, 7), (11, 13)):   # 63 pixels (the 64-pixel tile), 143 (two 128-pixel tiles)
        wide = 2 * w if layout == "row_view" else w
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        s, x, o = (randn(2, c, h, wide, dtype=dtype, device=device, gen=gen).contiguous(memory_format=fmt)
                   for _ in range(3))
        o.fill_(float("nan"))
        if layout == "row_view":
            s, x, o = s[..., :w], x[..., :w], o[..., :w]
        strides = (s.stride(), x.stride(), o.stride())
        assert L.pw_launch((2, c, h, w), dtype, L.PW_GATE, strides)[2]["FLAT"] == (layout != "row_view")
        w1 = randn(c, c, 1, 1, dtype=dtype, device=device, gen=gen) * c ** -0.5
        b1 = randn(c, dtype=dtype, device=device, gen=gen)
        pw_gate(s, w1, b1, x, out=o)
        t = torch.einsum("oi,bihw->bohw", w1.double().reshape(c, c), s.double()) + b1.double()[:, None, None]
        assert_close(o, x.double() * t, dtype, f"pw_gate {layout} {h}x{w}", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("case", [(24, "same"), (24, "mixed"), (80, "same")], ids=str)
def test_pw_gate_backward_and_wgrad_poisoned(device, case):
    """The backward kernels write every element of their (NaN-poisoned) outputs: the gate's
    backward in one launch (24 channels, dt and ds alike) and in two (80 channels: two channel
    blocks; 24 with ds NCHW and dt channels-last)."""
    import ops.lka.kernels as L
    c, strides = case
    assert L.pw_backward_fused(c) == (c <= 64)
    gen, seed = fresh_generator()
    dtype, (b, h, w) = torch.float32, (2, 9, 7)
    s, x, g = (randn(b, c, h, w, dtype=dtype, device=device, gen=gen) for _ in range(3))
    w1 = randn(c, c, 1, 1, dtype=dtype, device=device, gen=gen) * c ** -0.5
    b1 = randn(c, dtype=dtype, device=device, gen=gen)
    bufs = [poisoned(b, c, h, w, dtype=dtype, device=device) for _ in range(3)]
    if strides == "mixed":
        bufs[1] = bufs[1].contiguous(memory_format=torch.channels_last)
    dx, dt, ds = pw_gate_backward(s, w1, b1, x, g, *bufs)
    t = torch.einsum("oi,bihw->bohw", w1.double().reshape(c, c), s.double()) + b1.double()[:, None, None]
    assert_close(dx, g.double() * t, dtype, "dx = g * t", seed)
    assert_close(dt, g.double() * x.double(), dtype, "dt = g * x", seed)
    assert_close(ds, torch.einsum("oi,bohw->bihw", w1.double().reshape(c, c), g.double() * x.double()),
                 dtype, "ds = W1^T dt", seed)
    wt = randn(c, 1, 1, 5, dtype=dtype, device=device, gen=gen)
    _check_weight_grad(g, x, wt, 3, dtype, "1x5 d3", seed)


@pytest.mark.kernel
def test_batch_offsets_past_2_31_elements(device):
    """Inputs and an output whose last batch item starts past 2**31 elements (batch stride
    < 2**31): the depthwise conv, its weight gradient and the 1x1 + gate forward and backward must
    not wrap their batch offsets. Against the fp64 reference on all three items."""
    gen, seed = fresh_generator()
    dtype, (c, h, w) = torch.float16, (16, 9, 7)
    x, s, g, o = far_batch_views(4, (c, h, w), dtype, device, gen)
    o.fill_(float("nan"))
    wt = randn(c, 1, 7, 7, dtype=dtype, device=device, gen=gen) * 0.15
    bias = randn(c, dtype=dtype, device=device, gen=gen)
    dw_conv(x, wt, bias, 3, out=o)
    assert_close(o, depthwise_conv2d_reference(x.double(), wt.double(), bias.double(), 3), dtype,
                 "dw_conv (far batch)", seed)
    _check_weight_grad(g, x, wt, 3, dtype, "far batch", seed)
    w1 = randn(c, c, 1, 1, dtype=dtype, device=device, gen=gen) * c ** -0.5
    b1 = randn(c, dtype=dtype, device=device, gen=gen)
    t = torch.einsum("oi,bihw->bohw", w1.double().reshape(c, c), s.double()) + b1.double()[:, None, None]
    o.fill_(float("nan"))
    pw_gate(s, w1, b1, x, out=o)
    assert_close(o, x.double() * t, dtype, "pw_gate (far batch)", seed)
    dx, dt, ds = pw_gate_backward(s, w1, b1, x, g)
    assert_close(dx, g.double() * t, dtype, "dx (far batch)", seed)
    assert_close(dt, g.double() * x.double(), dtype, "dt (far batch)", seed)
    assert_close(ds, torch.einsum("oi,bohw->bihw", w1.double().reshape(c, c), g.double() * x.double()),
                 dtype, "ds (far batch)", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("shape_dil", [((1, 7), 3), ((11, 1), 3), ((3, 3), 2)], ids=str)
def test_depthwise_conv2d(device, shape_dil):
    """The single depthwise conv (BEVANet's strip branches) forward and backward, non-contiguous x."""
    (kh, kw), dil = shape_dil
    gen, seed = fresh_generator()
    dtype, (b, c, h, w) = torch.float32, (2, 17, 10, 15)
    x = randn(b, c, w, h, dtype=dtype, device=device, gen=gen).transpose(2, 3).requires_grad_()  # strided
    weight = randn(c, 1, kh, kw, dtype=dtype, device=device, gen=gen, requires_grad=True)
    bias = randn(c, dtype=dtype, device=device, gen=gen, requires_grad=True)
    out = ops.depthwise_conv2d(x, weight, bias, dilation=dil)
    leaves = _fp64([x, weight, bias])
    ref = depthwise_conv2d_reference(*leaves, dil)
    assert_close(out, ref, dtype, f"depthwise {kh}x{kw} d{dil}", seed)
    grad = randn(*out.shape, dtype=dtype, device=device, gen=gen)
    for name, g, r in zip(("x", "weight", "bias"), torch.autograd.grad(out, [x, weight, bias], grad),
                          torch.autograd.grad(ref, leaves, grad.double())):
        assert_close(g, r, dtype, f"depthwise {kh}x{kw} grad {name}", seed)


@pytest.mark.kernel
@pytest.mark.parametrize("with_bias", [True, False])
def test_depthwise_conv2d_half_input_fp32_weights(device, with_bias):
    """Autocast's case for the single depthwise conv: fp16 x, fp32 weight (and bias) used as they
    are; gradients come back in each leaf's dtype; no bias gives no bias gradient."""
    gen, seed = fresh_generator()
    x = randn(2, 24, 9, 14, dtype=torch.float16, device=device, gen=gen, requires_grad=True)
    weight = randn(24, 1, 3, 3, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    bias = randn(24, dtype=torch.float32, device=device, gen=gen, requires_grad=True) if with_bias else None
    out = ops.depthwise_conv2d(x, weight, bias)
    assert out.dtype == torch.float16
    leaves = [x, weight] + ([bias] if with_bias else [])
    ref_leaves = _fp64(leaves)
    ref = depthwise_conv2d_reference(ref_leaves[0], ref_leaves[1], ref_leaves[2] if with_bias else None, 1)
    assert_close(out, ref, torch.float16, "depthwise fp16 x, fp32 weights", seed)
    grad = randn(*out.shape, dtype=torch.float16, device=device, gen=gen)
    for leaf, g, r in zip(leaves, torch.autograd.grad(out, leaves, grad),
                          torch.autograd.grad(ref, ref_leaves, grad.double())):
        assert g.dtype == leaf.dtype
        assert_close(g, r, torch.float16, "depthwise grad (fp16 x, fp32 weights)", seed)


@pytest.mark.kernel
def test_depthwise_conv2d_compiles(device):
    """torch.compile(fullgraph=True) traces the registered forward and backward ops."""
    gen, _ = fresh_generator()
    x = randn(1, 8, 6, 7, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    weight = randn(8, 1, 3, 3, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    bias = randn(8, dtype=torch.float32, device=device, gen=gen, requires_grad=True)
    fn = torch.compile(lambda a, w, b: ops.depthwise_conv2d(a, w, b, dilation=2), fullgraph=True, backend="aot_eager")
    out = fn(x, weight, bias)
    expected = ops.depthwise_conv2d(x, weight, bias, dilation=2)
    torch.testing.assert_close(out, expected)
    for g, e in zip(torch.autograd.grad(out.sum(), (x, weight, bias)),
                    torch.autograd.grad(expected.sum(), (x, weight, bias))):
        torch.testing.assert_close(g, e)


@pytest.mark.kernel
def test_large_kernel_attention_compiles(device):
    """torch.compile(fullgraph=True) traces the registered LKA chain (tensor-list arguments),
    forward and backward, with autocast-style fp32 weights on an fp16 map."""
    gen, _ = fresh_generator()
    x, params = _lka_inputs(1, 8, 6, 7, torch.float16, device, gen, torch.channels_last, requires_grad=True)
    params = [p.detach().float().requires_grad_() for p in params]
    fn = torch.compile(ops.large_kernel_attention, fullgraph=True, backend="aot_eager")
    out, expected = fn(x, *params), ops.large_kernel_attention(x, *params)
    torch.testing.assert_close(out, expected)
    for g, e in zip(torch.autograd.grad(out.float().sum(), (x, *params)),
                    torch.autograd.grad(expected.float().sum(), (x, *params))):
        torch.testing.assert_close(g, e)


@pytest.mark.kernel
def test_separable_lska_chain(device):
    """LSKA (kernel 23: 1x5, 5x1, 1x7 d3, 7x1 d3) through the shared kernels, forward and backward."""
    gen, seed = fresh_generator()
    dtype, (b, c, h, w) = torch.float32, (1, 16, 12, 9)
    x = randn(b, c, h, w, dtype=dtype, device=device, gen=gen, requires_grad=True)
    spec = lska_kernel_sizes(23)
    assert [k for k, _ in spec] == [(1, 5), (5, 1), (1, 7), (7, 1)] and [d for _, d in spec] == [1, 1, 3, 3]
    ws = [randn(c, 1, *k, dtype=dtype, device=device, gen=gen, requires_grad=True) for k, _ in spec]
    bs = [randn(c, dtype=dtype, device=device, gen=gen, requires_grad=True) for _ in spec]
    w1 = (randn(c, c, 1, 1, dtype=dtype, device=device, gen=gen) * c ** -0.5).requires_grad_()
    b1 = randn(c, dtype=dtype, device=device, gen=gen, requires_grad=True)
    dils = [d for _, d in spec]
    out = ops.separable_large_kernel_attention(x, ws, bs, dils, w1, b1)
    leaves = _fp64([x, *ws, *bs, w1, b1])
    ref = lka_chain_reference(leaves[0], leaves[1:5], leaves[5:9], dils, leaves[9], leaves[10])
    assert_close(out, ref, dtype, "lska forward", seed)
    grad = randn(*out.shape, dtype=dtype, device=device, gen=gen)
    grads = torch.autograd.grad(out, [x, *ws, *bs, w1, b1], grad)
    for i, (g, r) in enumerate(zip(grads, torch.autograd.grad(ref, leaves, grad.double()))):
        assert_close(g, r, dtype, f"lska grad of input #{i}", seed)


@pytest.mark.kernel
def test_empty_batch(device):
    """A batch of zero images: empty outputs, an empty input gradient and zero weight gradients
    (PyTorch's convolutions behave the same), from the LKA op and the single depthwise conv."""
    c = 8
    x = torch.empty(0, c, 9, 7, device=device, requires_grad=True)
    params = [torch.randn(*s, device=device, requires_grad=True)
              for s in [(c, 1, 5, 5), (c,), (c, 1, 7, 7), (c,), (c, c, 1, 1), (c,)]]
    out = ops.large_kernel_attention(x, *params)
    assert out.shape == x.shape
    grads = torch.autograd.grad(out.sum(), [x, *params])
    assert grads[0].shape == x.shape and all(torch.count_nonzero(g) == 0 for g in grads[1:])
    y = ops.depthwise_conv2d(x, params[2], params[3], dilation=3)
    assert y.shape == x.shape
    grads = torch.autograd.grad(y.sum(), [x, params[2], params[3]])
    assert grads[0].shape == x.shape and all(torch.count_nonzero(g) == 0 for g in grads[1:])


def test_reference_gradcheck():
    """The fp64 reference (the oracle) has correct gradients."""
    gen = torch.Generator().manual_seed(0)
    c = 3
    x = torch.randn(1, c, 6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    params = [torch.randn(*s, dtype=torch.float64, generator=gen, requires_grad=True)
              for s in [(c, 1, 5, 5), (c,), (c, 1, 7, 7), (c,), (c, c, 1, 1), (c,)]]
    assert torch.autograd.gradcheck(large_kernel_attention_reference, (x, *params), fast_mode=True)
    w = torch.randn(c, 1, 1, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: depthwise_conv2d_reference(x, w, None, 2), (x, w), fast_mode=True)


def test_bad_arguments():
    x = torch.randn(1, 4, 8, 8)
    w5, w7, b = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 7, 7), torch.randn(4)
    w1 = torch.randn(4, 4, 1, 1)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        ops.large_kernel_attention(x[0], w5, b, w7, b, w1, b)
    with pytest.raises(TypeError, match="x must be float"):
        ops.large_kernel_attention(x.long(), w5, b, w7, b, w1, b)
    with pytest.raises(ValueError, match="x must have at least one channel, row and column"):
        ops.large_kernel_attention(x[:, :, :0], w5, b, w7, b, w1, b)
    with pytest.raises(ValueError, match="conv0_weight must be a 5x5"):
        ops.large_kernel_attention(x, w7, b, w7, b, w1, b)
    with pytest.raises(ValueError, match=r"dw\[1\]_weight must be a depthwise kernel"):
        ops.large_kernel_attention(x, w5, b, torch.randn(5, 1, 7, 7), b, w1, b)
    with pytest.raises(ValueError, match="conv1_weight must be a 1x1 conv"):
        ops.large_kernel_attention(x, w5, b, w7, b, torch.randn(4, 4, 3, 3), b)
    with pytest.raises(ValueError, match="conv1_bias must have shape"):
        ops.large_kernel_attention(x, w5, b, w7, b, w1, torch.randn(5))
    with pytest.raises(ValueError, match="weight must have odd kernel sizes"):
        ops.depthwise_conv2d(x, torch.randn(4, 1, 4, 4))
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        ops.depthwise_conv2d(x, torch.randn(4, 1, 3, 3), dilation=0)
    with pytest.raises(ValueError, match="equal length"):
        ops.separable_large_kernel_attention(x, [w5], [b, b], [1], w1, b)
    with pytest.raises(ValueError, match="kernel must be one of"):
        lska_kernel_sizes(17)
    assert TOLERANCE  # helpers imported for their tolerances
