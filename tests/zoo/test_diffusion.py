"""zoo.diffusion: neighborhood-attention processors for tiny random Wan, FLUX, HunyuanVideo and
CogVideoX (1.0 and 1.5) and LTX-Video transformers.

The reference for a sparsified model is the same model running diffusers' ORIGINAL processors
with an explicit boolean NATTEN-window mask (built here from NATTEN's rules) handed to their
attention call, so the hook (layout, token grid, RoPE, text tokens) is checked end to end.
"""
import functools
import types

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    CogVideoXTransformer3DModel,
    FluxTransformer2DModel,
    HunyuanVideoTransformer3DModel,
    LTXVideoTransformer3DModel,
    WanTransformer3DModel,
)
from diffusers.models.embeddings import get_3d_rotary_pos_embed  # noqa: E402

from ops.neighborhood.reference import neighborhood_mask  # noqa: E402
from zoo.diffusion import is_sparsified, reset_steps, sparsify, unsparsify  # noqa: E402

WAN_GRID = (2, 4, 5)      # frames, rows, cols after the (1, 2, 2) patchify (not square: axis order matters)
FLUX_GRID = (4, 5)
N_TEXT = 5
HY_GRID = (2, 4, 3)       # HunyuanVideo: frames, rows, cols after the (1, 2, 2) patchify
HY_TEXT_LENS = (5, 3)     # valid text tokens per batch item (of N_TEXT): padding that differs within the batch
COG_GRID = (2, 3, 4)      # CogVideoX: frames (// patch_size_t for 1.5), rows, cols after patchify
LTX_GRID = (3, 2, 4)      # LTX-Video: forward(num_frames=, height=, width=)


# ---------------------------------------------------------------- tiny models and inputs
def tiny_wan():
    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    return model.eval()


def wan_inputs(t=500.0):
    g = torch.Generator().manual_seed(1)
    f, h, w = WAN_GRID
    return dict(hidden_states=torch.randn(1, 4, f, 2 * h, 2 * w, generator=g),
                encoder_hidden_states=torch.randn(1, N_TEXT, 16, generator=g),
                timestep=torch.tensor([t]))


def tiny_flux():
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    return model.eval()


def flux_inputs(t=0.5, grid=FLUX_GRID):
    g = torch.Generator().manual_seed(1)
    h, w = grid
    img_ids = torch.zeros(h, w, 3)    # as FluxPipeline._prepare_latent_image_ids builds them
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    return dict(hidden_states=torch.randn(1, h * w, 4, generator=g),
                encoder_hidden_states=torch.randn(1, N_TEXT, 32, generator=g),
                pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([t]),
                img_ids=img_ids.reshape(-1, 3), txt_ids=torch.zeros(N_TEXT, 3))


def tiny_hunyuan():
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(4, 6, 6))
    return model.eval()


def hunyuan_inputs(t=500.0, text_lens=HY_TEXT_LENS):
    g = torch.Generator().manual_seed(1)
    f, h, w = HY_GRID
    b = len(text_lens)
    text_mask = (torch.arange(N_TEXT)[None] < torch.tensor(text_lens)[:, None]).long()
    return dict(hidden_states=torch.randn(b, 4, f, 2 * h, 2 * w, generator=g), timestep=torch.tensor([t] * b),
                encoder_hidden_states=torch.randn(b, N_TEXT, 16, generator=g), encoder_attention_mask=text_mask,
                pooled_projections=torch.randn(b, 8, generator=g), guidance=torch.tensor([3500.0] * b))


def tiny_cogvideox(patch_size_t=None):
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=4,
        text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        patch_size_t=patch_size_t, temporal_compression_ratio=4, max_text_seq_length=8,
        use_rotary_positional_embeddings=True)
    return model.eval()


def cogvideox_inputs(t=500.0, patch_size_t=None):
    g = torch.Generator().manual_seed(1)
    f, h, w = COG_GRID
    rope = get_3d_rotary_pos_embed(16, ((0, 0), (h, w)), (h, w), f)   # row-major (frames, rows, cols)
    return dict(hidden_states=torch.randn(1, f * (patch_size_t or 1), 4, 2 * h, 2 * w, generator=g),   # B, T, C, H, W
                encoder_hidden_states=torch.randn(1, N_TEXT, 8, generator=g), timestep=torch.tensor([t]),
                image_rotary_emb=rope)


def tiny_ltx():
    torch.manual_seed(0)
    model = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
        num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=16)
    return model.eval()


def ltx_inputs(t=500.0):
    g = torch.Generator().manual_seed(1)
    f, h, w = LTX_GRID
    return dict(hidden_states=torch.randn(1, f * h * w, 4, generator=g),    # packed tokens (patch size 1)
                encoder_hidden_states=torch.randn(1, N_TEXT, 16, generator=g), timestep=torch.tensor([t]),
                encoder_attention_mask=torch.ones(1, N_TEXT), num_frames=f, height=h, width=w,
                rope_interpolation_scale=(1 / 25, 32, 32))


MODELS = {"wan": (tiny_wan, wan_inputs, WAN_GRID), "flux": (tiny_flux, flux_inputs, FLUX_GRID),
          "hunyuan": (tiny_hunyuan, hunyuan_inputs, HY_GRID),
          "cogvideox": (tiny_cogvideox, cogvideox_inputs, COG_GRID),
          "cogvideox15": (lambda: tiny_cogvideox(2), lambda t=500.0: cogvideox_inputs(t, 2), COG_GRID),
          "ltx": (tiny_ltx, ltx_inputs, LTX_GRID)}
TEXT_FIRST = {"flux", "cogvideox", "cogvideox15"}    # joint sequences: text first (FLUX, CogVideoX) or last


def one_item_inputs(name):
    """The inputs of MODELS[name] with batch size 1 (HunyuanVideo's default batch has two items
    with different text padding, which runs the NA op per item: slower under the interpreter)."""
    if name == "hunyuan":
        return functools.partial(hunyuan_inputs, text_lens=(N_TEXT,))
    return MODELS[name][1]


@torch.no_grad()
def run(model, inputs):
    return model(**inputs).sample


# ---------------------------------------------------------------- the reference: masked originals
def natten_axis_mask(length, kernel, dilation=1, stride=1):
    """[length, length] bool, NATTEN's (non-causal) window along one axis, written from its rules:
    dilation splits the axis into interleaved groups; within a group a query's window is the
    ``kernel`` keys centred on its stride-group leader, shifted to stay inside the group."""
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        group, local = i % dilation, i // dilation
        members = list(range(group, length, dilation))
        leader = min((local // stride) * stride + stride // 2, len(members) - 1)
        start = min(max(leader - kernel // 2, 0), len(members) - kernel)
        for j in members[start:start + kernel]:
            allowed[i, j] = True
    return allowed


def natten_mask(grid, kernel, dilation=None, stride=None):
    """[N, N] token mask over the row-major flattened grid (a query sees a key iff every axis allows)."""
    dilation = dilation or (1,) * len(grid)
    stride = stride or (1,) * len(grid)
    axes = [natten_axis_mask(n, k, d, s) for n, k, d, s in zip(grid, kernel, dilation, stride)]
    coords = torch.cartesian_prod(*[torch.arange(n) for n in grid]).reshape(-1, len(grid))
    mask = torch.ones(len(coords), len(coords), dtype=torch.bool)
    for a, m in enumerate(axes):
        mask &= m[coords[:, a][:, None], coords[:, a][None, :]]
    return mask


def joint_mask(grid, kernel, text_first=True, **kw):
    """Text rows see everything; video/image rows see all text plus their window (text tokens
    first as in FLUX / CogVideoX, or last as in HunyuanVideo)."""
    n_vis = 1
    for g in grid:
        n_vis *= g
    mask = torch.ones(N_TEXT + n_vis, N_TEXT + n_vis, dtype=torch.bool)
    vis = slice(N_TEXT, None) if text_first else slice(0, n_vis)
    mask[vis, vis] = natten_mask(grid, kernel, **kw)
    return mask


def flux_joint_mask(grid, kernel, **kw):
    return joint_mask(grid, kernel, **kw)


class MaskedOriginal:
    """Calls the untouched diffusers processor with a boolean attention mask (ANDed with the
    padding mask the transformer hands it, if any: HunyuanVideo's [B, 1, 1, N] key mask)."""

    def __init__(self, original, mask):
        self.original, self.mask = original, mask[None, None]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 image_rotary_emb=None):   # diffusers' Attention drops kwargs not in this signature
        mask = self.mask if attention_mask is None else attention_mask & self.mask
        rope = rotary_emb if rotary_emb is not None else image_rotary_emb
        return self.original(attn, hidden_states, encoder_hidden_states, mask, rope)


class MaskedPrepared(MaskedOriginal):
    """CogVideoX's and LTX's processors run their mask through ``attn.prepare_attention_mask``: [B, N, N]."""

    def __init__(self, original, mask):
        self.original, self.mask = original, mask[None]


def masked_reference(name, mask, layers=None):
    """The model with every self-attention layer (or those in ``layers``) masked; the layer index
    runs over the swappable layers (HunyuanVideo's token refiner is not one)."""
    model = MODELS[name][0]()
    keys = [k for k in model.attn_processors if ".attn2." not in k and not k.startswith("context_embedder.")]
    wrapper = MaskedPrepared if name.startswith(("cogvideox", "ltx")) else MaskedOriginal
    for i, key in enumerate(keys):
        if layers is None or i in layers:
            model.get_submodule(key.removesuffix(".processor")).set_processor(
                wrapper(model.attn_processors[key], mask))
    return model


def test_test_mask_agrees_with_ops_rule():
    for grid, k, d, s in [((4, 4), (3, 3), (1, 1), (1, 1)), ((2, 4, 4), (1, 2, 3), (1, 2, 1), (1, 2, 3)),
                          ((7, 5), (3, 2), (2, 2), (2, 1))]:
        assert torch.equal(natten_mask(grid, k, d, s),
                           neighborhood_mask(grid, k, d, s, (False,) * len(grid)))


# ---------------------------------------------------------------- 1. full window == dense
@pytest.mark.parametrize("name", list(MODELS))
def test_full_window_equals_dense(name):
    build, inputs, grid = MODELS[name]
    model = build()
    dense = run(model, inputs())
    sparsify(model, kernel_size=grid)
    torch.testing.assert_close(run(model, inputs()), dense, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 2. small window == masked reference
@pytest.mark.parametrize("name, kw", [
    ("wan", dict(kernel_size=(1, 3, 3))),
    ("wan", dict(kernel_size=(2, 2, 3), dilation=(1, 2, 1), stride=(1, 1, 2))),
    ("flux", dict(kernel_size=3)),
    ("flux", dict(kernel_size=(2, 3), dilation=(2, 1), stride=(1, 3))),
    ("hunyuan", dict(kernel_size=(1, 3, 2))),
    ("hunyuan", dict(kernel_size=(2, 2, 3), dilation=(1, 2, 1), stride=(1, 1, 2))),
    ("cogvideox", dict(kernel_size=(1, 2, 3))),
    ("cogvideox15", dict(kernel_size=(2, 3, 2), dilation=(1, 1, 2), stride=(1, 2, 1))),
    ("ltx", dict(kernel_size=(2, 1, 3), dilation=(1, 2, 1), stride=(2, 1, 1))),
])
def test_small_window_matches_masked_reference(name, kw):
    build, inputs, grid = MODELS[name]
    model = build()
    dense = run(model, inputs())
    sparsify(model, **kw)
    out = run(model, inputs())
    assert (out - dense).abs().max() > 1e-3, "a small window should change the output"
    rank = len(grid)
    as_t = lambda v: (v,) * rank if isinstance(v, int) else v  # noqa: E731
    mask_kw = dict(dilation=as_t(kw.get("dilation", 1)), stride=as_t(kw.get("stride", 1)))
    mask = (natten_mask(grid, as_t(kw["kernel_size"]), **mask_kw) if name in ("wan", "ltx")
            else joint_mask(grid, as_t(kw["kernel_size"]), text_first=name in TEXT_FIRST, **mask_kw))
    torch.testing.assert_close(out, run(masked_reference(name, mask), inputs()), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 3. what stays dense
def test_cross_attention_untouched_and_dense_layers():
    model = tiny_wan()
    before = model.attn_processors
    block_out = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: block_out.__setitem__(i, o))
    dense = run(model, wan_inputs())
    dense_blocks = dict(block_out)

    sparsify(model, kernel_size=(1, 3, 3), dense_layers=(0,))
    after = model.attn_processors
    for key in before:
        if ".attn2." in key or key.startswith("blocks.0."):
            assert after[key] is before[key], key
        else:
            assert type(after[key]).__name__ == "WanNeighborhoodAttnProcessor" and after[key].original is before[key]
    out = run(model, wan_inputs())
    assert torch.equal(block_out[0], dense_blocks[0])             # the dense block is bit-identical
    assert (block_out[1] - dense_blocks[1]).abs().max() > 1e-3
    mask = natten_mask(WAN_GRID, (1, 3, 3))
    torch.testing.assert_close(out, run(masked_reference("wan", mask, layers={1}), wan_inputs()),
                               atol=1e-5, rtol=1e-5)
    assert (out - dense).abs().max() > 1e-3


def test_flux_dense_layers_index_double_then_single():
    model = tiny_flux()
    before = model.attn_processors
    sparsify(model, kernel_size=3, dense_layers=(1,))   # 0: transformer_blocks.0, 1: single_transformer_blocks.0
    after = model.attn_processors
    assert after["single_transformer_blocks.0.attn.processor"] is before["single_transformer_blocks.0.attn.processor"]
    assert after["transformer_blocks.0.attn.processor"].original is before["transformer_blocks.0.attn.processor"]
    mask = flux_joint_mask(FLUX_GRID, (3, 3))
    reference = run(masked_reference("flux", mask, layers={0}), flux_inputs())
    torch.testing.assert_close(run(model, flux_inputs()), reference, atol=1e-5, rtol=1e-5)


def test_hunyuan_dense_layers_index_dual_then_single():
    model = tiny_hunyuan()
    before = model.attn_processors
    sparsify(model, kernel_size=(1, 3, 2), dense_layers=(0,))   # 0: transformer_blocks.0, 1: single_transformer_blocks.0
    after = model.attn_processors
    assert after["transformer_blocks.0.attn.processor"] is before["transformer_blocks.0.attn.processor"]
    assert after["single_transformer_blocks.0.attn.processor"].original is \
        before["single_transformer_blocks.0.attn.processor"]
    refiner = "context_embedder.token_refiner.refiner_blocks.0.attn.processor"
    assert after[refiner] is before[refiner]                        # the text refiner is never swapped
    mask = joint_mask(HY_GRID, (1, 3, 2), text_first=False)
    reference = run(masked_reference("hunyuan", mask, layers={1}), hunyuan_inputs())
    torch.testing.assert_close(run(model, hunyuan_inputs()), reference, atol=1e-5, rtol=1e-5)


def test_cogvideox_dense_layers():
    model = tiny_cogvideox()
    before = model.attn_processors
    sparsify(model, kernel_size=(1, 2, 3), dense_layers=(1,))
    after = model.attn_processors
    assert after["transformer_blocks.1.attn1.processor"] is before["transformer_blocks.1.attn1.processor"]
    assert after["transformer_blocks.0.attn1.processor"].original is before["transformer_blocks.0.attn1.processor"]
    mask = joint_mask(COG_GRID, (1, 2, 3))
    reference = run(masked_reference("cogvideox", mask, layers={0}), cogvideox_inputs())
    torch.testing.assert_close(run(model, cogvideox_inputs()), reference, atol=1e-5, rtol=1e-5)


def test_ltx_dense_layers_and_cross_attention_untouched():
    model = tiny_ltx()
    before = model.attn_processors
    sparsify(model, kernel_size=(2, 1, 3), dense_layers=(0,))
    after = model.attn_processors
    for key in before:
        if ".attn2." in key or key.startswith("transformer_blocks.0."):
            assert after[key] is before[key], key
        else:
            assert after[key].original is before[key], key
    reference = run(masked_reference("ltx", natten_mask(LTX_GRID, (2, 1, 3)), layers={1}), ltx_inputs())
    torch.testing.assert_close(run(model, ltx_inputs()), reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="no token grid"):
        run(model, dict(ltx_inputs(), num_frames=None, video_coords=torch.zeros(1, 3, 24)))   # positions only


def test_hunyuan_text_padding(monkeypatch):
    """Only the valid text tokens are extra keys/values: one NA call for the batch when the valid
    lengths agree, one per item when they differ. (No valid text at all makes the
    dense model itself NaN: the token refiner mean-pools over zero tokens.)"""
    import zoo.diffusion.common as zoo_common   # the processors' shared neighborhood-attention call
    calls = []
    na = zoo_common.neighborhood_attention
    monkeypatch.setattr(zoo_common, "neighborhood_attention", lambda q, *a, **k: calls.append(
        (q.shape[0], None if k["additional_keys"] is None else k["additional_keys"].shape[1])) or na(q, *a, **k))
    mask = joint_mask(HY_GRID, (2, 3, 2), text_first=False)
    for lens, expected in [((3, 3), [(2, 3)]), ((4, 1), [(1, 4), (1, 1)])]:
        model = sparsify(tiny_hunyuan(), kernel_size=(2, 3, 2))
        calls.clear()
        out = run(model, hunyuan_inputs(text_lens=lens))
        assert calls == expected * 2, (lens, calls)                    # 2 layers
        reference = run(masked_reference("hunyuan", mask), hunyuan_inputs(text_lens=lens))
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["wan", "flux"])
def test_dense_steps(name):
    build, _, _ = MODELS[name]
    inputs = one_item_inputs(name)
    t0, t1 = (900.0, 800.0) if name == "wan" else (0.9, 0.8)
    model = build()
    dense = [run(model, inputs(t)) for t in (t0, t1)]
    sparse = [run(sparsify(model, kernel_size=3 if name == "flux" else (1, 3, 3)), inputs(t)) for t in (t0, t1)]
    sparsify(model, kernel_size=3 if name == "flux" else (1, 3, 3), dense_steps=1)
    # a fake 2-step loop with classifier-free guidance (two transformer calls per step)
    for _ in range(2):                                              # a second pipeline call restarts the count
        assert torch.equal(run(model, inputs(t0)), dense[0])      # step 0: dense (the original processors)
        assert torch.equal(run(model, inputs(t0)), dense[0])      # same timestep: still step 0
        torch.testing.assert_close(run(model, inputs(t1)), sparse[1], atol=0, rtol=0)   # step 1: sparse
        torch.testing.assert_close(run(model, inputs(t1)), sparse[1], atol=0, rtol=0)
    reset_steps(model)
    assert torch.equal(run(model, inputs(t1)), dense[1])          # reset: the next call is step 0


@pytest.mark.parametrize("name, kernel", [("hunyuan", (1, 3, 2)), ("cogvideox", (1, 2, 3)), ("ltx", (2, 1, 3))])
def test_dense_steps_other_families(name, kernel):
    """The step count itself is shared machinery (tested above); here: each family's hook feeds it
    its timestep and its processor hands step 0 to the original bit-for-bit."""
    build, _, _ = MODELS[name]
    inputs = one_item_inputs(name)
    model = build()
    dense = [run(model, inputs(t)) for t in (900.0, 800.0)]
    sparsify(model, kernel_size=kernel, dense_steps=1)
    assert torch.equal(run(model, inputs(900.0)), dense[0])       # step 0: dense
    assert (run(model, inputs(800.0)) - dense[1]).abs().max() > 1e-3   # step 1: sparse


# ---------------------------------------------------------------- 4. unsparsify, idempotence, pipelines
@pytest.mark.parametrize("name", ["wan", "flux", "hunyuan", "cogvideox", "ltx"])
def test_unsparsify_restores_originals_and_twice_is_once(name):
    build, _, grid = MODELS[name]
    inputs = one_item_inputs(name)
    model = build()
    before = model.attn_processors
    dense = run(model, inputs())
    kernel = tuple(max(1, g - 1) for g in grid)
    once = run(sparsify(model, kernel_size=kernel), inputs())
    n_hooks = len(model._forward_pre_hooks)
    assert sparsify(model, kernel_size=kernel) is model
    assert len(model._forward_pre_hooks) == n_hooks
    assert all(getattr(p, "original", p) is before[k] for k, p in model.attn_processors.items())  # no stacking
    assert torch.equal(run(model, inputs()), once)
    assert unsparsify(model) is model and not is_sparsified(model)
    assert all(p is before[k] for k, p in model.attn_processors.items())
    assert len(model._forward_pre_hooks) == n_hooks - 1
    assert torch.equal(run(model, inputs()), dense)
    unsparsify(model)                                               # a no-op now


def test_pipeline_object_and_backend_passthrough():
    model = tiny_wan()
    pipe = types.SimpleNamespace(transformer=model, transformer_2=None)
    assert sparsify(pipe, kernel_size=(1, 3, 3)) is pipe and is_sparsified(pipe)
    proc = model.attn_processors["blocks.0.attn1.processor"]
    model.set_attention_backend("native")                          # reaches the kept original
    assert proc.original._attention_backend == proc._attention_backend == "native"
    unsparsify(pipe)
    assert model.attn_processors["blocks.0.attn1.processor"] is proc.original


def test_wan_pipeline_counts_steps(monkeypatch):
    """A real (tiny, offline) WanPipeline with classifier-free guidance: 2 steps, dense_steps=1, so
    only step 1's two transformer calls (cond + uncond) x 2 layers reach the NA op, in each of
    two pipeline calls (the second call is detected by its timestep going up again)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    import zoo.diffusion.common as zoo_common
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))
    pipe.set_progress_bar_config(disable=True)
    shapes = []
    na = zoo_common.neighborhood_attention
    monkeypatch.setattr(zoo_common, "neighborhood_attention", lambda q, *a, **k: shapes.append(q.shape) or na(q, *a, **k))
    sparsify(pipe, kernel_size=(2, 2, 2), dense_steps=1)
    g = torch.Generator().manual_seed(0)
    kw = dict(prompt_embeds=torch.randn(1, 4, 32, generator=g),
              negative_prompt_embeds=torch.randn(1, 4, 32, generator=g),
              height=32, width=48, num_frames=9, num_inference_steps=2, guidance_scale=5.0, output_type="pt")
    for _ in range(2):
        shapes.clear()
        frames = pipe(**kw, generator=torch.Generator().manual_seed(0)).frames
        assert frames.shape == (1, 9, 3, 32, 48) and torch.isfinite(frames).all()
        assert shapes == [(1, 3, 2, 3, 2, 16)] * 4     # latent grid: 1 + (9 - 1) // 4 frames, 32/16 x 48/16


# ---------------------------------------------------------------- 5. errors
def test_errors():
    with pytest.raises(NotImplementedError, match="WanTransformer3DModel, FluxTransformer2DModel"):
        sparsify(torch.nn.Linear(2, 2), kernel_size=3)
    with pytest.raises(ValueError, match="pipeline"):
        sparsify(object(), kernel_size=3)
    model = tiny_wan()
    with pytest.raises(ValueError, match="unknown method 'radial_typo'"):
        sparsify(model, method="radial_typo", kernel_size=3)
    with pytest.raises(ValueError, match="needs kernel_size"):
        sparsify(model)
    with pytest.raises(ValueError, match="tuple of 3"):
        sparsify(model, kernel_size=(3, 3))
    with pytest.raises(ValueError, match="dense_layers"):
        sparsify(model, kernel_size=3, dense_layers=(2,))
    with pytest.raises(ValueError, match="stride"):
        sparsify(model, kernel_size=(1, 2, 2), stride=(1, 3, 1))
    assert not is_sparsified(model)                                # nothing half-done
    sparsify(model, kernel_size=(1, 5, 3))
    with pytest.raises(ValueError, match=r"blocks\.0\.attn1: kernel_size \(1, 5, 3\).*grid \(2, 4, 5\)"):
        run(model, wan_inputs())
    flux = sparsify(tiny_flux(), kernel_size=3)
    bad = flux_inputs()
    bad["img_ids"] = bad["img_ids"].flip(0)
    with pytest.raises(ValueError, match="row-major grid"):
        run(flux, bad)
    cog = sparsify(tiny_cogvideox(), kernel_size=(1, 2, 3))
    with pytest.raises(NotImplementedError, match="attention_mask"):
        run(cog, dict(cogvideox_inputs(), attention_kwargs={"attention_mask": torch.ones(1, 1, 29, 29)}))
    from zoo.diffusion.common import SparseState
    from zoo.diffusion.hunyuan_video import _valid_text_lengths
    n_vid = HY_GRID[0] * HY_GRID[1] * HY_GRID[2]
    keep = torch.ones(1, 1, 1, n_vid + N_TEXT, dtype=torch.bool)
    assert _valid_text_lengths(SparseState(0), "x", keep, 2, n_vid, N_TEXT) == (N_TEXT, N_TEXT)
    keep[..., n_vid + 1] = False                                    # a hole: not a prefix
    with pytest.raises(NotImplementedError, match="prefix"):
        _valid_text_lengths(SparseState(0), "x", keep, 1, n_vid, N_TEXT)
    with pytest.raises(NotImplementedError, match="boolean key mask"):
        _valid_text_lengths(SparseState(0), "x", keep.float(), 1, n_vid, N_TEXT)


# ---------------------------------------------------------------- 6. radial attention
RADIAL_GRID = (6, 3, 4)   # frames, rows, cols after patchify: 12 tokens a frame, 72 in all; blocks of 16
GRID_NAMES = {"wan": "WAN_GRID", "hunyuan": "HY_GRID", "cogvideox": "COG_GRID", "ltx": "LTX_GRID"}


@pytest.mark.parametrize("name", list(GRID_NAMES))
def test_radial_matches_masked_reference(name, monkeypatch):
    """method="radial": video queries see the radial token mask (block mask at 16-token blocks)
    over the video tokens plus every text token; text queries stay dense."""
    from ops.block_sparse import token_mask
    from ops.radial import radial_block_mask

    monkeypatch.setitem(globals(), GRID_NAMES[name], RADIAL_GRID)
    build, inputs = MODELS[name][0], one_item_inputs(name)
    model = build()
    dense = run(model, inputs())
    sparsify(model, method="radial", decay_factor=1.0, block_size=16)
    out = run(model, inputs())
    f, n = RADIAL_GRID[0], RADIAL_GRID[0] * RADIAL_GRID[1] * RADIAL_GRID[2]
    text = 0 if name in ("wan", "ltx") else N_TEXT
    video = token_mask(radial_block_mask(f, n // f, 16, 1.0, "wan" if name == "wan" else "hunyuan", text), 16,
                       n + text)[:n, :n]
    assert not video.all() and video.any(1).all()
    if text:
        mask = torch.ones(text + n, text + n, dtype=torch.bool)
        vis = slice(text, None) if name in TEXT_FIRST else slice(0, n)
        mask[vis, vis] = video
    else:
        mask = video
    assert (out - dense).abs().max() > 1e-3, "the radial mask should change the output"
    torch.testing.assert_close(out, run(masked_reference(name, mask), inputs()), atol=1e-5, rtol=1e-5)
    if name == "wan":
        assert "method='radial'" in repr(model.attn_processors["blocks.0.attn1.processor"])


def test_radial_errors_and_dense_steps():
    model = tiny_wan()
    with pytest.raises(ValueError, match="takes no kernel_size"):
        sparsify(model, method="radial", kernel_size=3)
    with pytest.raises(ValueError, match="decay_factor"):
        sparsify(model, method="radial", decay_factor=0)
    with pytest.raises(ValueError, match="radial_model"):
        sparsify(model, method="radial", radial_model="cog")
    with pytest.raises(ValueError, match="block_size"):
        sparsify(model, method="radial", block_size=8)
    with pytest.raises(ValueError, match="video transformer"):
        sparsify(tiny_flux(), method="radial")
    assert not is_sparsified(model)
    dense = run(model, wan_inputs(900.0))
    sparsify(model, method="radial", block_size=16, dense_steps=1)
    assert torch.equal(run(model, wan_inputs(900.0)), dense)          # step 0: the original processors
