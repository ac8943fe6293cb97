"""Block-sparse attention (ops.block_sparse) and radial attention (ops.radial): the Triton core
with variable-length KV lists and a ragged last block against the float64 reference, the
reference against dense attention, the radial mask against the release's literal token-level
procedure, and the argument rules."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

import ops
from ops.block_sparse import (PAD, attend_lists, block_mask_to_index, block_sparse_attention_reference,
                              index_to_block_mask, token_mask, visit_order)
from ops.common import block_sparse as core
from ops.common import interpret_mode
from ops.radial import radial_block_mask, radial_index
from ops.radial.mask import radial_window

needs_kernels = pytest.mark.skipif(not interpret_mode() and not torch.cuda.is_available(),
                                   reason="the Triton kernels need a GPU or TRITON_INTERPRET=1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _poisoned():
    """Outputs allocated by torch.empty* start as NaN: anything a kernel leaves unwritten shows."""
    real_empty, real_like = torch.empty, torch.empty_like

    def empty(*a, **k):
        t = real_empty(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def empty_like(*a, **k):
        t = real_like(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(torch, "empty", empty)
        monkeypatch.setattr(torch, "empty_like", empty_like)
        yield


def _inputs(B, N, H, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, H, D, generator=g).to(DEVICE, dtype).requires_grad_() for _ in range(3)]


def _reference(q, k, v, mask, bs, scale, grad):
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out, lse = block_sparse_attention_reference(q64, k64, v64, mask, bs, scale)
    return (out, lse, *torch.autograd.grad(out, (q64, k64, v64), grad.double()))


TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def _tma_on_short_walks(monkeypatch):
    """The tests' lists are short; with the walk threshold at 0, ``USE_TMA`` alone picks the load
    path, so TMA runs here (the interpreter runs descriptors) as well as pointer loads."""
    monkeypatch.setattr(core, "TMA_MIN_WALK", 0)


@needs_kernels
@pytest.mark.parametrize("B,N,H,D,bs,density,dtype", [
    (2, 100, 2, 32, 16, 0.4, torch.float32),     # ragged last block (100 = 6 x 16 + 4), lists of every length
    (1, 64, 3, 16, 32, 0.5, torch.float32),      # whole blocks
    (1, 70, 1, 64, 16, 0.3, torch.float16),
    (2, 48, 2, 24, 16, 1.0, torch.float32),      # a full mask: dense attention; head dim off the power of two
    (1, 129, 1, 8, 64, 0.6, torch.float32),      # one token in the last block
    (1, 70, 2, 16, 24, 0.5, torch.float32),      # blocks no multiple of the streamed block: per-row addressing
    pytest.param(1, 96, 2, 64, 32, 0.5, torch.bfloat16,
                 marks=pytest.mark.skipif(interpret_mode(), reason="bf16 tl.dot is wrong under the interpreter; "
                                                                  "kernels upcast there, the GPU run checks bf16")),
])
@pytest.mark.parametrize("tma", [True, False], ids=["tma", "pointers"])
def test_kernels_match_reference(B, N, H, D, bs, density, dtype, tma, monkeypatch):
    """Both load paths of the sequence kernels: TMA descriptors (the interpreter runs them for
    every dtype; the GPU for 16-bit inputs with power-of-two head dims) and pointer loads."""
    monkeypatch.setattr(core, "USE_TMA", tma)
    torch.manual_seed(N + bs)
    q, k, v = _inputs(B, N, H, D, dtype, seed=N * 7 + H)
    nb = -(-N // bs)
    mask = torch.rand(B, nb, nb) < density
    if density < 1:
        mask[0, min(1, nb - 1)] = False            # a query block that selects nothing
        mask[-1, 0, -1] = True                      # the ragged last block as a key block
    mask = mask.to(DEVICE)
    grad = torch.randn(B, N, H, D).to(DEVICE, dtype)
    with _poisoned():
        out, lse = ops.block_sparse_attention(q, k, v, mask, block_size=bs, return_lse=True)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    ref_out, ref_lse, rdq, rdk, rdv = _reference(q, k, v, mask, bs, D ** -0.5, grad)
    tol = TOL[dtype]
    for name, got, want in (("out", out, ref_out), ("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
        assert torch.isfinite(got).all(), name
        err = (got.double() - want).abs().max().item() / max(1.0, want.abs().max().item())
        assert err < tol, (name, err)
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert (lse[finite].double() - ref_lse[finite]).abs().max() < 1e-4
    if density < 1:
        rows = slice(bs, min(2 * bs, N))
        assert (out[0, rows] == 0).all() and (dq[0, rows] == 0).all() and torch.isinf(lse[0, rows]).all()


@needs_kernels
@pytest.mark.parametrize("batch_mask,tma", [(1, True), (2, True), (2, False)])
def test_per_head_masks(batch_mask, tma, monkeypatch):
    """[B|1, H, NB, NB]: each head its own pattern (heads as rows of the core's tile grid), forward,
    LSE and gradients against the reference; a head whose mask is full equals dense attention."""
    monkeypatch.setattr(core, "USE_TMA", tma)
    B, N, H, D, bs = 2, 75, 3, 16, 16
    q, k, v = _inputs(B, N, H, D, torch.float32, seed=21)
    g = torch.Generator().manual_seed(21)
    mask = torch.rand(batch_mask, H, 5, 5, generator=g) < 0.4
    mask[:, 0] = True                                                  # head 0: dense
    mask[0, 1, 2] = False                                              # an empty row in head 1
    mask = mask.to(DEVICE)
    grad = torch.randn(B, N, H, D).to(DEVICE)
    with _poisoned():
        out, lse = ops.block_sparse_attention(q, k, v, mask, block_size=bs, return_lse=True)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    ref_out, ref_lse, rdq, rdk, rdv = _reference(q, k, v, mask, bs, D ** -0.5, grad)
    for got, want in ((out, ref_out), (dq, rdq), (dk, rdk), (dv, rdv)):
        assert torch.isfinite(got).all()
        assert (got.double() - want).abs().max() < 2e-5
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    dense = F.scaled_dot_product_attention(*(t[:, :, :1].transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    torch.testing.assert_close(out[:, :, :1], dense, atol=2e-5, rtol=1e-5)
    # a per-head mask whose heads agree is the shared mask
    shared = ops.block_sparse_attention(q, k, v, mask[:, 1:2].expand(-1, H, -1, -1), block_size=bs)
    torch.testing.assert_close(shared, ops.block_sparse_attention(q, k, v, mask[:, 1], block_size=bs))


def test_tma_walk_rule(monkeypatch):
    """Sequence tiles load through TMA only when a program's walk (the longest list times the
    tile's tokens; for dK/dV the lists' entries spread over the KV tiles) reaches TMA_MIN_WALK,
    and never with USE_TMA off; 2-D tiles (routed attention) never."""
    if torch.cuda.is_available() and not interpret_mode() and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA needs sm_90+")
    monkeypatch.setattr(core, "TMA_MIN_WALK", 2048)   # the rule at any threshold
    device = torch.cuda.current_device() if DEVICE == "cuda" else -1
    B, X, H, D, T = 1, 4096, 2, 32, 64
    C, nq = H * D, X // T
    seq = (X * C, X * C, C, 1)
    strides = (*seq * 4, X * H, X * H, H, 1)

    def tma(nk, tile=(1, T), Y=1, Xs=X):
        st = strides + (nq * nk, nk)
        fwd = core.forward_launch(device, B, Y, Xs, C, tile, nq, nk, H, torch.float16, 1.0, st, (0,) * 7,
                                  tma_min_walk=core._tma_min_walk())
        bwd_st = (seq,) * 8 + (strides[16:20], st[20:22])
        dq, dkv, _ = core.backward_launches(device, B, Y, Xs, C, tile, nq, nk, H, torch.float16, 1.0, bwd_st,
                                            (0,) * 12, tma_min_walk=core._tma_min_walk())
        return fwd.meta["TMA"], dq.meta["TMA"], dkv.meta["TMA"]

    assert tma(32) == (True, True, True)                  # 32 x 64 = 2048 tokens
    assert tma(31) == (False, False, False)
    monkeypatch.setattr(core, "USE_TMA", False)
    assert tma(32) == (False, False, False)
    monkeypatch.setattr(core, "USE_TMA", True)
    assert tma(32, tile=(8, 8), Y=64, Xs=64) == (False, False, False)   # 2-D tiles: no sequence path


def test_per_head_reference_path_and_index():
    from ops.block_sparse import _index_mask, per_head_index
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 3, 4, 4, generator=g) < 0.5
    index = per_head_index(mask)
    assert index.shape[:2] == (2, 12) and torch.equal(_index_mask(index, 4, 3, True), mask)
    q, k, v = (torch.randn(2, 60, 3, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: ops.block_sparse_attention(a, b, c, mask, block_size=16),
                                    (q, k, v))


@needs_kernels
def test_full_mask_equals_sdpa():
    q, k, v = _inputs(2, 80, 2, 32, torch.float32, seed=3)
    mask = torch.ones(5, 5, dtype=torch.bool, device=DEVICE)   # blocks of 16 cover all 80 tokens
    out = ops.block_sparse_attention(q, k, v, mask, block_size=16)
    want = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-5)


@needs_kernels
def test_strided_inputs_and_batch_shared_mask():
    """Slices of one fused qkv projection are read in place; a [NB, NB] mask serves every item."""
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 90, 3, 2, 16, generator=g).to(DEVICE)
    q, k, v = qkv.unbind(2)
    mask = torch.rand(6, 6, generator=g).to(DEVICE) < 0.5
    mask[:, 0] = True
    out = ops.block_sparse_attention(q, k, v, mask, block_size=16)
    want, _ = block_sparse_attention_reference(q.double(), k.double(), v.double(), mask[None], 16, 16 ** -0.5)
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=1e-5)


def test_reference_against_masked_sdpa_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 21, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(1, 3, 3, generator=g) < 0.6
    mask[0, :, 0] = True
    out, lse = block_sparse_attention_reference(q, k, v, mask, 8, 0.5)
    tok = token_mask(mask, 8, 21)
    want = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), attn_mask=tok[:, None],
                                          scale=0.5).transpose(1, 2)
    torch.testing.assert_close(out, want)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * 0.5
    torch.testing.assert_close(lse, torch.logsumexp(s.masked_fill(~tok[:, None], -math.inf), -1).transpose(1, 2))
    mask[0, 1] = False   # an empty row: finite gradients (zero for its queries)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: block_sparse_attention_reference(a, b, c, mask, 8, 0.5)[0],
                                    (qg, kg, vg))


def test_float64_runs_the_reference_with_gradients():
    q, k, v = (torch.randn(1, 40, 1, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    assert torch.autograd.gradcheck(lambda a, b, c: ops.block_sparse_attention(a, b, c, mask, block_size=16),
                                    (q, k, v))


def test_visit_order():
    """Query blocks by descending list length, then key blocks by descending number of listings,
    ties in block order; a permutation of each part."""
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 7, 7, generator=g) < 0.5
    mask[0, 6] = True                                   # the longest list last, as the radial mask's
    mask[1, 2] = False                                  # an empty list
    order = visit_order(block_mask_to_index(mask), 7)
    assert order.dtype == torch.int32 and order.shape == (2, 14)
    for b in range(2):
        rows, cols = order[b, :7].long(), order[b, 7:].long()
        assert sorted(rows.tolist()) == list(range(7)) and sorted(cols.tolist()) == list(range(7))
        lengths, counts = mask[b].sum(1)[rows], mask[b].sum(0)[cols]
        assert (lengths[:-1] >= lengths[1:]).all() and (counts[:-1] >= counts[1:]).all()
        for key, ids in ((lengths, rows), (counts, cols)):   # ties keep block order
            same = key[:-1] == key[1:]
            assert (ids[:-1][same] < ids[1:][same]).all()
    assert order[0, 0] == 6


@needs_kernels
def test_any_visit_order_gives_the_same_result():
    """The kernels read the order (a non-permutation changes the output) and any permutation of
    query and key blocks computes the same attention, forward and backward."""
    B, N, H, D, bs = 1, 90, 2, 16, 16
    q, k, v = _inputs(B, N, H, D, torch.float32, seed=5)
    mask = (torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(5)) < 0.5).to(DEVICE)
    index = block_mask_to_index(mask)
    grad = torch.randn(B, N, H, D).to(DEVICE)
    results = []
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    for order in (visit_order(index, 6), torch.arange(12) % 6, torch.cat([perm, perm.flip(0)])):
        with _poisoned():
            out = attend_lists(q, k, v, index, order.reshape(1, -1).to(DEVICE, torch.int32), bs)
            results.append((out, *torch.autograd.grad(out, (q, k, v), grad)))
    for got in results[1:]:
        for a, b in zip(results[0], got):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    twice = torch.zeros(1, 12, dtype=torch.int32, device=DEVICE)   # block 0 six times: the others unwritten
    with _poisoned():
        out = attend_lists(q, k, v, index, twice, bs)
    assert torch.isnan(out[:, bs:]).all()


def test_index_round_trip():
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(3, 7, 9, generator=g) < 0.3
    mask[1, 2] = False
    index = block_mask_to_index(mask)
    assert index.dtype == torch.int32 and index.shape[-1] == max(1, int(mask.sum(-1).max()))
    assert torch.equal(index_to_block_mask(index, 9), mask)
    assert (index[1, 2] == PAD).all()
    valid = index != PAD
    assert (valid.diff(dim=-1).logical_not() | valid[..., :-1]).all()              # the padding last
    step = index.long().diff(dim=-1)
    assert (step[valid[..., 1:]] > 0).all()                                          # ascending


# ---- radial ------------------------------------------------------------------------------------


def _literal_radial(num_frames, tpf, bs, decay, model, text=0):
    """The release's procedure step by step on token masks (tests only: quadratic in the frame)."""
    video = num_frames * tpf
    blocks = -(-(video + text) // bs)
    final = torch.zeros(blocks, blocks, dtype=torch.bool)
    r = torch.arange(tpf)[:, None]
    c = torch.arange(tpf)[None, :]
    for i in range(num_frames):
        for j in range(num_frames):
            dist = abs(i - j)
            if j == 0:
                local = torch.ones(tpf, tpf, dtype=torch.bool)
            else:
                local = (c - r).abs() <= radial_window(dist, tpf, bs, decay, model)
                decay_len = 2 ** tpf.bit_length() / 2 ** dist.bit_length()
                if decay_len < bs and dist % int(bs / decay_len) != 0:
                    local = torch.zeros_like(local)
            ro, co = (i * tpf) % bs, (j * tpf) % bs
            nb = (tpf - 1) // bs + 1
            padded = torch.zeros(ro + nb * bs, co + nb * bs, dtype=torch.bool)
            padded[ro:ro + tpf, co:co + tpf] = local
            m = padded[:nb * bs, :nb * bs].view(nb, bs, nb, bs)
            dens = m.sum(1) / bs
            keep = (dens > 1 / 3).sum(-1) / ((dens > 0).sum(-1) + 1e-9) > 0.6
            r0, c0 = (i * tpf) // bs, (j * tpf) // bs
            r1, c1 = min(blocks, r0 + nb), min(blocks, c0 + nb)
            final[r0:r1, c0:c1] |= keep[:r1 - r0, :c1 - c0]
    final[video // bs:] = True
    final[:, video // bs:] = True
    return final


@pytest.mark.parametrize("frames,tpf,bs,decay,model,text", [
    (9, 100, 16, 1.0, "wan", 0),      # frames straddle blocks; decayed windows reach the block floor
    (12, 64, 16, 0.5, "wan", 0),      # block-aligned frames; diagonal splits
    (8, 90, 32, 0.95, "hunyuan", 20),
    (17, 40, 16, 0.2, "wan", 5),
])
def test_radial_mask_matches_the_literal_procedure(frames, tpf, bs, decay, model, text):
    assert torch.equal(radial_block_mask(frames, tpf, bs, decay, model, text), _literal_radial(frames, tpf, bs, decay,
                                                                                              model, text))


def test_radial_mask_density_at_wan_sizes():
    """BENCHMARKS.md's radial cases: block density 0.32 (480p) and 0.24 (720p) with decay 0.2."""
    assert abs(radial_block_mask(21, 1560, decay_factor=0.2).float().mean().item() - 0.3255) < 1e-3
    assert abs(radial_block_mask(21, 3600, decay_factor=0.2).float().mean().item() - 0.2443) < 1e-3
    m = radial_block_mask(21, 1560, decay_factor=1.0)
    assert m[:, :13].all()                              # key frame 0 (blocks 0-12) is a sink for everyone
    assert m.diagonal().all()


@needs_kernels
def test_radial_attention_matches_reference():
    frames, tpf, text, bs = 6, 40, 8, 16
    q, k, v = _inputs(1, frames * tpf + text, 2, 16, torch.float32, seed=11)
    out = ops.radial_attention(q, k, v, frames, decay_factor=0.5, text_tokens=text, block_size=bs, model="hunyuan")
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    mask = radial_block_mask(frames, tpf, bs, 0.5, "hunyuan", text).to(DEVICE)
    assert not mask.all()
    ref = _reference(q, k, v, mask[None], bs, 16 ** -0.5, grad)
    for got, want in zip((out, dq, dk, dv), (ref[0], *ref[2:])):
        assert (got.double() - want).abs().max() < 2e-5


def test_radial_index_is_cached_per_device():
    a = radial_index(5, 48, 16, 1.0, "wan")
    assert a is radial_index(5, 48, 16, 1.0, "wan")
    assert torch.equal(index_to_block_mask(a, a.shape[1])[0], radial_block_mask(5, 48, 16))


def test_reference_backward_matches_autograd():
    g = torch.Generator().manual_seed(4)
    q, k, v, do = (torch.randn(2, 37, 2, 8, generator=g, dtype=torch.float64) for _ in range(4))
    mask = torch.rand(2, 3, 3, generator=g) < 0.5
    mask[0, 1] = False
    from ops.block_sparse import block_sparse_attention_reference_backward
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    want = torch.autograd.grad(block_sparse_attention_reference(*leaves, mask, 16, 0.3)[0], leaves, do)
    got = block_sparse_attention_reference_backward(do, q, k, v, mask, 16, 0.3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])   # float64: the reference path
def test_compile_fullgraph(dtype):
    q, k, v = (torch.randn(1, 96, 2, 16, dtype=dtype, requires_grad=True) for _ in range(3))
    index = radial_index(4, 24, 16, 1.0, "wan")
    from ops.block_sparse import block_sparse_attention_from_index

    def f(a, b, c):
        return block_sparse_attention_from_index(a, b, c, index, 16).square().sum()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("call,match", [
    (lambda q, m: ops.block_sparse_attention(q, q, q[..., :8], m, 16), "one shape"),
    (lambda q, m: ops.block_sparse_attention(q[0], q[0], q[0], m, 16), "dimensions"),
    (lambda q, m: ops.block_sparse_attention(q, q, q.double(), m, 16), "one shape|dtype"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m, 8), "block_size must be >= 16"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m, 16.0), "block_size must be an int"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m.int(), 16), "bool"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m[:2], 16), r"NB = ceil\(N / block_size\) = 3"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m.expand(1, 3, 3, 3), 16), "H = 2"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m.expand(3, 3, 3), 16), "B = 2"),
    (lambda q, m: ops.block_sparse_attention(q, q, q, m, 16, scale=-1.0), "scale"),
    (lambda q, m: ops.block_sparse_attention(q.int(), q, q, m, 16), "float16, bfloat16"),
    (lambda q, m: ops.radial_attention(q, q, q, num_frames=7), "multiple of num_frames"),
    (lambda q, m: ops.radial_attention(q, q, q, num_frames=0), "num_frames"),
    (lambda q, m: ops.radial_attention(q, q, q, num_frames=4, model="cog"), "model must be one of"),
    (lambda q, m: ops.radial_attention(q, q, q, num_frames=4, decay_factor=0), "decay_factor"),
    (lambda q, m: ops.radial_attention(q, q, q, num_frames=4, text_tokens=-1), "text_tokens"),
])
def test_argument_errors(call, match):
    q = torch.randn(2, 40, 2, 16)
    m = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises((ValueError, TypeError), match=match):
        call(q, m)


def test_head_dim_limit():
    q = torch.randn(1, 16, 1, 130)
    with pytest.raises(ValueError, match="head dim"):
        ops.block_sparse_attention(q, q, q, torch.ones(1, 1, dtype=torch.bool), 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])   # float64: the reference path
def test_lse_gradient(dtype):
    """The returned LSE is differentiable (alone or with the output), on the kernels and the reference."""
    if dtype == torch.float32 and not (interpret_mode() or torch.cuda.is_available()):
        pytest.skip("the Triton kernels need a GPU or TRITON_INTERPRET=1")
    q, k, v = _inputs(2, 70, 2, 16, dtype, seed=9)
    mask = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(9)) < 0.5
    mask[0, 2] = False
    mask[:, :, 0] = True
    mask[0, 2, 0] = False                                                 # an empty row (LSE -inf)
    mask = mask.to(DEVICE)
    go, gl = torch.randn(2, 70, 2, 16).to(DEVICE, dtype), torch.randn(2, 70, 2).to(DEVICE, dtype)
    out, lse = ops.block_sparse_attention(q, k, v, mask, block_size=16, return_lse=True)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref_out, ref_lse = block_sparse_attention_reference(*leaves, mask, 16, 16 ** -0.5)
    finite = torch.isfinite(ref_lse)
    for loss, ref_loss in (((out * go).sum() + (lse[finite] * gl[finite]).sum(),
                            (ref_out * go).sum() + (ref_lse[finite] * gl[finite]).sum()),
                           ((lse[finite] * gl[finite]).sum(), (ref_lse[finite] * gl[finite]).sum())):
        got = torch.autograd.grad(loss, (q, k, v), retain_graph=True)
        want = torch.autograd.grad(ref_loss, leaves, retain_graph=True, allow_unused=True)
        for a, b in zip(got, want):
            b = torch.zeros_like(a, dtype=torch.float64) if b is None else b   # the LSE alone: no dV
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=1e-4)


def test_empty_inputs():
    q = torch.randn(0, 32, 2, 8, requires_grad=True)
    out = ops.block_sparse_attention(q, q, q, torch.ones(2, 2, dtype=torch.bool), 16)
    assert out.shape == q.shape
    out.sum().backward()
    assert q.grad.shape == q.shape
