"""Index-driven block-sparse attention on 2-D token maps: one Triton core, forward and backward.

The map is ``[B, Y, X, C]`` (any strides), ``C = heads * head_dim``. It is cut into tiles of
``tile_h x tile_w`` tokens, numbered row-major (``tiles_x`` per row). Query tile ``i`` of batch
``b`` attends to the concatenated tokens of KV tiles ``kv_index[b, i, :]`` (repeats allowed: a
tile listed twice is attended twice, as a gathered copy would be). Token addresses are computed
in-kernel from tile ids, so selected keys/values are never copied. A 1-D sequence is the case
``Y = 1, tile_h = 1``.

Packing: the routed tiles' tokens form one flat list ``n = entry * T + t``; each KV step loads
``BLOCK_N`` tokens of that list whatever the tile size, so 4-token tiles do not pad to 16.
Tiles smaller than half a row block are also packed on the fixed side: a program owns
``group = BLOCK // T`` consecutive query tiles (KV tiles in dK/dV), streams the concatenation of
their lists and masks each row to its own tile's segment. BiFormer's 2x2-token regions (stage 3
at 224 px) would otherwise fill 4 of 16 rows and launch 4x the programs.
The backward takes two launches. The first runs dQ per query tile like the forward (storing
``delta = rowsum(dO * O)`` on the way, so no separate pass, next to the log2 LSE: one 8-byte pair
per query, ``lse_delta.py``) and, in extra programs of the same
grid, the inverse lists (CSR of "which query tiles routed here"); the second runs dK/dV per KV
tile from those lists. Every gradient element is written by exactly one program: no atomics.
A single launch (dK/dV programs scanning the routing table themselves and recomputing delta)
was measured 11-140% slower on the GPU on BiFormer's shapes; launches cost host time, so the
lists ride along with dQ instead of taking a launch of their own.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .args import check_span
from .block_index import PAD
from .dispatch import dot_precision, interpret_mode, tune_configs
from .lse_delta import load_lse_delta, store_lse_delta
from .tuning import BoundLaunch, Launcher, alignment, cdiv, heads_grid, next_power_of_2, scratch_allocator, wide_offsets

__all__ = ["PAD", "backward_launches", "block_sparse_attention_backward", "block_sparse_attention_forward",
           "forward_launch"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _token_offsets(tile, t, TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, s_y, s_x):
    """Memory offset (within one batch item) of token ``t`` of tile ``tile``. The tile grid is
    constexpr: these divisions run per streamed row, and by a runtime divisor each took ~10-15
    instructions on sm_90 (a multiply-shift by a constant, a shift for powers of two)."""
    y = (tile // TILES_X) * TILE_H + t // TILE_W
    x = (tile % TILES_X) * TILE_W + t % TILE_W
    return y * s_y + x * s_x


@triton.jit
def _in_width(tile, t, TILES_X: tl.constexpr, TILE_W: tl.constexpr, x_len):
    """Whether token ``t`` of ``tile`` lies inside the map's ``x_len`` columns: with RAGGED the
    last tile column overhangs the map (a sequence that is no multiple of the tile)."""
    return (tile % TILES_X) * TILE_W + t % TILE_W < x_len


@triton.jit
def _list_length(row, NK: tl.constexpr, NK_P2: tl.constexpr):
    """Entries of one query tile's KV list before its padding (VARLEN: lists of different lengths
    share one [NQ, NK] table, padded at the end with PAD = 2**31 - 1)."""
    slot = tl.arange(0, NK_P2)
    kv = tl.load(row + slot, mask=slot < NK, other=2147483647)
    return tl.sum((kv != 2147483647).to(tl.int32), 0)


@triton.jit
def _rows_ptr(base, tile, t, ch, TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, s_y, s_x, s_c):
    """Pointers [rows, D] to channels ``ch`` of token ``t`` of tile ``tile`` (per row) in one
    batch item's [Y, X, C] map at ``base``."""
    return base + _token_offsets(tile, t, TILES_X, TILE_H, TILE_W, s_y, s_x)[:, None] + ch[None, :] * s_c


def _stream_configs(name: str) -> list:
    """Autotuned size of the streamed block (KV tokens in fwd/dQ, query tokens in dK/dV). The
    first list serves fixed blocks of up to 64 rows (BiFormer's tiles); 128-row fixed blocks
    (block-sparse and radial attention's 128-token tiles) get a list of their own, see
    :func:`_prune_for_fixed_block`."""
    if interpret_mode():  # one small config: autotuning under the interpreter only costs time
        return [triton.Config({name: 16}, num_warps=4, num_stages=1)]
    narrow = tune_configs([triton.Config({name: b}, num_warps=w, num_stages=st) for b, w, st in
                           [(32, 2, 2), (32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 2, 3), (128, 4, 2), (128, 8, 2)]])
    wide = tune_configs([triton.Config({name: b}, num_warps=w, num_stages=st) for b, w, st in
                         [(32, 8, 2), (64, 8, 2), (64, 8, 3), (128, 8, 2), (128, 8, 3), (32, 4, 3), (64, 4, 3)]])
    _WIDE_CONFIGS.update(map(id, wide))
    return narrow + wide


_WIDE_CONFIGS: set[int] = set()   # ids of the candidates made for 128-row fixed blocks


def _prune_for_fixed_block(fixed: str):
    """``early_config_prune`` keeping the candidates made for the fixed block's size (named
    ``fixed``): the second list for 128 rows, the original list below (so BiFormer's tuning is
    what it was). Under the interpreter there is only one candidate."""
    def prune(configs, named_args, **kwargs):
        want_wide = kwargs.get(fixed, 0) >= 128
        kept = [c for c in configs if (id(c) in _WIDE_CONFIGS) == want_wide]
        return kept or configs
    return prune


_TUNE_KEY = ["T", "NK", "HEAD_DIM", "PRECISION", "BLOCK_M"]


@triton.jit
def _load_routed_kv(K, V, idx_base, si_q, start, n_total, T: tl.constexpr, NK: tl.constexpr, ch, d_valid,
                    TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                    sk_y, sk_x, sk_c, sv_y, sv_x, sv_c, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr,
                    PACKED: tl.constexpr, RAGGED: tl.constexpr, x_len):
    """Keys/values [BLOCK_N, D] of streamed positions start.. of a query-tile group's routed lists
    (concatenated): position n is token n % T of entry e = n // T, the KV tile listed in slot
    e % NK of the group's query tile e // NK (its owner), read in place (no gathered copy).
    Unpacked (one query tile), the owner is 0 and the list is contiguous."""
    offs_n = start + tl.arange(0, BLOCK_N)
    n_valid = offs_n < n_total
    entry = offs_n // T
    if PACKED:
        owner = entry // NK
        kv_tile = tl.load(idx_base + owner * si_q + entry % NK, mask=n_valid, other=0)
    else:
        owner = 0
        kv_tile = tl.load(idx_base + entry, mask=n_valid, other=0)
    t = offs_n % T
    if RAGGED:
        n_valid = n_valid & _in_width(kv_tile, t, TILES_X, TILE_W, x_len)
    kv_mask = n_valid[:, None] & d_valid[None, :]
    k = tl.load(_rows_ptr(K, kv_tile, t, ch, TILES_X, TILE_H, TILE_W, sk_y, sk_x, sk_c), mask=kv_mask, other=0.0)
    v = tl.load(_rows_ptr(V, kv_tile, t, ch, TILES_X, TILE_H, TILE_W, sv_y, sv_x, sv_c), mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    return k, v, n_valid, owner


@triton.jit
def _row_descriptor(base, x_len, row_w, s_x, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, TMA: tl.constexpr):
    """TMA: a tensor descriptor over one batch item of a sequence map, [x_len tokens, row_w
    channels] (a token's channels, all heads, contiguous), read in [BLOCK, BLOCK_D] boxes; rows
    past the end read as zeros. Otherwise the base pointer."""
    if TMA:
        return tl.make_tensor_descriptor(base, shape=[x_len, row_w], strides=[s_x, 1], block_shape=[BLOCK, BLOCK_D])
    else:
        return base


@triton.jit
def _seq_rows(base, desc, tile, sub, col, cols, d_valid, s_y, s_x, x_len, TILES_X: tl.constexpr, T: tl.constexpr,
              BLOCK: tl.constexpr, RAGGED: tl.constexpr, TMA: tl.constexpr):
    """Rows ``sub * BLOCK ..`` of ``tile`` in a sequence's tile grid (SEQ: tiles one token high;
    the grid's rows are heads when each head has its own lists), one scalar tile per streamed
    step: the rows are one contiguous run, a TMA box when TMA (``col``: the head's first channel),
    else pointer loads (``cols``: its channel offsets). Returns the [BLOCK, BLOCK_D] rows and
    which of them lie inside the sequence."""
    y = tile // TILES_X
    x0 = (tile % TILES_X) * T + sub * BLOCK
    offs = x0 + tl.arange(0, BLOCK)
    valid = offs < x_len
    if TMA:
        rows = desc.load([x0, y * s_y + col])
    else:
        mask = d_valid[None, :]
        if RAGGED:
            mask = valid[:, None] & mask
        rows = tl.load(base + y * s_y + offs[:, None] * s_x + cols[None, :], mask=mask, other=0.0)
    return rows, offs, valid


@triton.jit
def _stream_kv(K, V, kd, vd, idx_base, si_q, step, n_total, col, ch, d_valid, sk_y, sk_x, sk_c, sv_y, sv_x, sv_c, x_len,
               TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, T: tl.constexpr,
               NK: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr, PACKED: tl.constexpr,
               RAGGED: tl.constexpr, SEQ: tl.constexpr, TMA: tl.constexpr):
    """Keys/values of streamed step ``step`` of a program's KV list(s): SEQ steps (T a multiple
    of BLOCK_N) read one listed tile's run of rows (:func:`_seq_rows`), others go through
    :func:`_load_routed_kv`. ``col``: the head's first channel. Returns (k, v, valid columns,
    owner)."""
    if SEQ and T % BLOCK_N == 0:
        STEPS: tl.constexpr = T // BLOCK_N
        kv_tile = tl.load(idx_base + step // STEPS)
        k, offs, n_valid = _seq_rows(K, kd, kv_tile, step % STEPS, col, ch * sk_c, d_valid, sk_y, sk_x, x_len,
                                     TILES_X, T, BLOCK_N, RAGGED, TMA)
        v, offs, n_valid = _seq_rows(V, vd, kv_tile, step % STEPS, col, ch * sv_c, d_valid, sv_y, sv_x, x_len,
                                     TILES_X, T, BLOCK_N, RAGGED, TMA)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        return k, v, n_valid, 0
    else:
        return _load_routed_kv(K, V, idx_base, si_q, step * BLOCK_N, n_total, T, NK, ch, d_valid, TILES_X, TILE_H,
                               TILE_W, sk_y, sk_x, sk_c, sv_y, sv_x, sv_c, BLOCK_N, UPCAST, PACKED, RAGGED, x_len)


@triton.jit
def _n_steps(idx_base, NQ, tile0, group, T: tl.constexpr, NK: tl.constexpr, NK_P2: tl.constexpr,
             BLOCK_N: tl.constexpr, PACKED: tl.constexpr, VARLEN: tl.constexpr, SEQ: tl.constexpr):
    """(streamed steps, listed tokens) of a program's KV list(s)."""
    if VARLEN:   # one query tile per program (the host never packs variable-length lists)
        n_total = _list_length(idx_base, NK, NK_P2) * T
    else:
        n_total = (tl.minimum(group, NQ - tile0) if PACKED else 1) * NK * T
    if SEQ and T % BLOCK_N == 0:
        return n_total // BLOCK_N, n_total
    else:
        return tl.cdiv(n_total, BLOCK_N), n_total


@triton.jit
def _fixed_rows(pid, split, group, n_tiles, T: tl.constexpr, BLOCK: tl.constexpr, PACKED: tl.constexpr):
    """Rows of a program's fixed side: ``group`` consecutive tiles packed into one block of
    BLOCK rows (PACKED: T <= BLOCK / 2), or chunk ``pid % split`` of one tile (unpacked: the
    tile and member are scalars, so the big-tile kernels compile as before packing existed).
    Returns the first tile, each row's group member, tile, token and validity."""
    if PACKED:
        tile0 = pid * group
        local = tl.arange(0, BLOCK)
        member = local // T
        tile = tile0 + member
        return tile0, member, tile, local % T, (member < group) & (tile < n_tiles)
    else:
        tile = pid // split
        offs = (pid % split) * BLOCK + tl.arange(0, BLOCK)
        return tile, 0, tile, offs, offs < T


@triton.jit
def _program(n_per_head, H, WIDE: tl.constexpr, FLAT: tl.constexpr):
    """(program within its (batch, head), batch, head). The grid is (programs, batch * heads), or
    flat when batch * heads passes the second axis' 65535 (FLAT: programs of one head adjacent,
    then heads, then batch items; the 2-D grid spares the common case two runtime divisions per
    program, probe41). WIDE (host: ``wide_offsets``, some tensor's offsets reach 2**31): the batch
    index is int64, so batch offsets are; otherwise int32, which compiles to 3-8% fewer
    instructions (probe41)."""
    pid = tl.program_id(0)
    if FLAT:
        bh = pid // n_per_head
        pid = pid % n_per_head
    else:
        bh = tl.program_id(1)
    b = bh // H
    if WIDE:
        b = b.to(tl.int64)
    return pid, b, bh % H


@triton.jit
def _visit(order, pid, split):
    """ORDERED (unpacked tiles only): program ``pid`` takes chunk ``pid % split`` of tile
    ``order[pid // split]`` instead of tile ``pid // split``. The host orders tiles by descending
    work (``block_index.visit_order``), so no long list starts in the last wave: on the radial
    mask, whose last row lists every block (3-4x the mean), a list-scheduling model puts the
    natural order 7-11% above the ideal makespan and this order within 2%."""
    return tl.load(order + pid // split) * split + pid % split


@triton.autotune(configs=_stream_configs("BLOCK_N"), key=_TUNE_KEY,
                 prune_configs_by={"early_config_prune": _prune_for_fixed_block("BLOCK_M")})
@triton.jit
def _bs_fwd_kernel(
    Q, K, V, O, LSE, IDX, ORD,
    sq_b, sq_y, sq_x, sq_c, sk_b, sk_y, sk_x, sk_c, sv_b, sv_y, sv_x, sv_c,
    so_b, so_y, so_x, so_c, sl_b, sl_y, sl_x, sl_h, si_b, si_q, sord_b,
    H, NQ, q_split, group, qk_scale, x_len,
    TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, T: tl.constexpr, NK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr, WIDE: tl.constexpr,
    FLAT: tl.constexpr, VARLEN: tl.constexpr, RAGGED: tl.constexpr, NK_P2: tl.constexpr, ORDERED: tl.constexpr,
    SEQ: tl.constexpr, TMA: tl.constexpr, row_w,
):
    pid, b, h = _program(tl.cdiv(NQ, group) * q_split, H, WIDE, FLAT)
    if ORDERED:
        pid = _visit(ORD + b * sord_b, pid, q_split)

    tile0, member, tile, offs_m, m_valid = _fixed_rows(pid, q_split, group, NQ, T, BLOCK_M, PACKED)
    if RAGGED:
        m_valid = m_valid & _in_width(tile, offs_m, TILES_X, TILE_W, x_len)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < HEAD_DIM
    ch = h * HEAD_DIM + offs_d

    q = tl.load(_rows_ptr(Q + b * sq_b, tile, offs_m, ch, TILES_X, TILE_H, TILE_W, sq_y, sq_x, sq_c),
                mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    idx_base = IDX + b * si_b + tile0 * si_q
    n_steps, n_total = _n_steps(idx_base, NQ, tile0, group, T, NK, NK_P2, BLOCK_N, PACKED, VARLEN, SEQ)
    kd = _row_descriptor(K + b * sk_b, x_len, row_w, sk_x, BLOCK_N, BLOCK_D, TMA)
    vd = _row_descriptor(V + b * sv_b, x_len, row_w, sv_x, BLOCK_N, BLOCK_D, TMA)
    for step in range(0, n_steps):
        k, v, n_valid, owner = _stream_kv(K + b * sk_b, V + b * sv_b, kd, vd, idx_base, si_q, step, n_total,
                                          h * HEAD_DIM, ch, d_valid, sk_y, sk_x, sk_c, sv_y, sv_x, sv_c, x_len,
                                          TILES_X, TILE_H, TILE_W, T, NK, BLOCK_N, UPCAST, PACKED, RAGGED, SEQ, TMA)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2 domain
        if PACKED:
            s = tl.where(n_valid[None, :] & (owner[None, :] == member[:, None]), s, float("-inf"))
        else:
            s = tl.where(n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if PACKED:  # a packed row sees only its own tile's segment: blocks before it are fully masked
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_ref = m_new
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    if VARLEN:   # an empty list: output 0 and LSE -inf, as FlexAttention gives
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        lse2 = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf"))
        l_i = l_safe
    else:
        lse2 = m_i + tl.log2(l_i)
    acc = acc / l_i[:, None]
    tl.store(_rows_ptr(O + b * so_b, tile, offs_m, ch, TILES_X, TILE_H, TILE_W, so_y, so_x, so_c),
             acc.to(O.dtype.element_ty), mask=m_valid[:, None] & d_valid[None, :])
    l_off = _token_offsets(tile, offs_m, TILES_X, TILE_H, TILE_W, sl_y, sl_x)
    tl.store(LSE + b * sl_b + l_off + h * sl_h, lse2 * 0.6931471805599453, mask=m_valid)


@triton.jit
def _dq_program(
    pid, b, h, Q, K, V, O, DO, DQ, LSE, GLSE, LD, IDX,
    sq_b, sq_y, sq_x, sq_c, sk_b, sk_y, sk_x, sk_c, sv_b, sv_y, sv_x, sv_c, sout_b, sout_y, sout_x, sout_c,
    so_b, so_y, so_x, so_c, sg_b, sg_y, sg_x, sg_c, sl_b, sl_y, sl_x, sl_h, si_b, si_q,
    NQ, split, group, sm_scale, x_len,
    TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, T: tl.constexpr, NK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr, VARLEN: tl.constexpr,
    RAGGED: tl.constexpr, NK_P2: tl.constexpr, HAS_GLSE: tl.constexpr, SEQ: tl.constexpr, TMA: tl.constexpr, row_w,
):
    """dQ of one query tile (chunk) or packed group: BLOCK_M fixed rows, routed keys streamed
    BLOCK_N at a time, as in the forward; stores (log2 LSE, rowsum(dO * O) - dLSE) pairs to LD for
    the dK/dV kernel. HAS_GLSE: the LSE output has a gradient ``GLSE`` (LSE's layout); since
    dLSE/ds = P, it joins every dS = P * (dP - delta) as delta - dLSE."""
    tile0, member, tile, offs_m, m_valid = _fixed_rows(pid, split, group, NQ, T, BLOCK_M, PACKED)
    if RAGGED:
        m_valid = m_valid & _in_width(tile, offs_m, TILES_X, TILE_W, x_len)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < HEAD_DIM
    ch = h * HEAD_DIM + offs_d
    qmask = m_valid[:, None] & d_valid[None, :]

    q = tl.load(_rows_ptr(Q + b * sq_b, tile, offs_m, ch, TILES_X, TILE_H, TILE_W, sq_y, sq_x, sq_c),
                mask=qmask, other=0.0)
    do = tl.load(_rows_ptr(DO + b * so_b, tile, offs_m, ch, TILES_X, TILE_H, TILE_W, so_y, so_x, so_c),
                 mask=qmask, other=0.0)
    o = tl.load(_rows_ptr(O + b * sout_b, tile, offs_m, ch, TILES_X, TILE_H, TILE_W, sout_y, sout_x, sout_c),
                mask=qmask, other=0.0)
    l_bh = b * sl_b + h * sl_h   # added to the base first: the per-row offsets stay int32 when WIDE
    l_off = _token_offsets(tile, offs_m, TILES_X, TILE_H, TILE_W, sl_y, sl_x)
    lse = tl.load(LSE + l_bh + l_off, mask=m_valid, other=0.0) * 1.4426950408889634
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)   # rowsum(dO * O), kept for dK/dV
    if HAS_GLSE:
        delta -= tl.load(GLSE + l_bh + l_off, mask=m_valid, other=0.0)
    store_lse_delta(LD + 2 * l_bh, l_off, lse, delta, m_valid)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)

    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    idx_base = IDX + b * si_b + tile0 * si_q
    n_steps, n_total = _n_steps(idx_base, NQ, tile0, group, T, NK, NK_P2, BLOCK_N, PACKED, VARLEN, SEQ)
    kd = _row_descriptor(K + b * sk_b, x_len, row_w, sk_x, BLOCK_N, BLOCK_D, TMA)
    vd = _row_descriptor(V + b * sv_b, x_len, row_w, sv_x, BLOCK_N, BLOCK_D, TMA)
    for step in range(0, n_steps):
        k, v, n_valid, owner = _stream_kv(K + b * sk_b, V + b * sv_b, kd, vd, idx_base, si_q, step, n_total,
                                          h * HEAD_DIM, ch, d_valid, sk_y, sk_x, sk_c, sv_y, sv_x, sv_c, x_len,
                                          TILES_X, TILE_H, TILE_W, T, NK, BLOCK_N, UPCAST, PACKED, RAGGED, SEQ, TMA)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        if PACKED:
            p = tl.where(n_valid[None, :] & m_valid[:, None] & (owner[None, :] == member[:, None]), p, 0.0)
        else:
            p = tl.where(n_valid[None, :] & m_valid[:, None], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)

    tl.store(_rows_ptr(DQ + b * sg_b, tile, offs_m, ch, TILES_X, TILE_H, TILE_W, sg_y, sg_x, sg_c),
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=qmask)


@triton.jit
def _workspace(WS, lists_off, ptr_off):
    """(LD, SRC, PTR) in the backward's one fp32 buffer: the (log2 LSE, delta) pairs at its start
    (``lse_delta.py``), then the inverse lists as int32 (SRC, then PTR ``ptr_off`` entries later).
    One allocation and no slices: on the H200 host each costs ~7 us of an eager backward that is
    bound by its CPU time."""
    SRC = (WS + lists_off).to(tl.pointer_type(tl.int32))
    return WS, SRC, SRC + ptr_off


@triton.jit
def _inverse_lists(IDX, SRC, PTR, si_q, tile, NE, NK, n_tiles, CHUNK: tl.constexpr):
    """CSR of the routing's inverse for KV tile ``tile`` of one batch item (IDX, SRC, PTR at its
    base): the query tiles that list it (ascending, once per listing) go to SRC after the
    listings of lower tiles, their start to PTR[tile] (the last tile also writes the end). A
    tile's start is a count, not a scan over other tiles, so programs are independent."""
    if tile < n_tiles:
        begin = tl.full((), 0, tl.int32)
        for c0 in range(0, NE, CHUNK):
            e = c0 + tl.arange(0, CHUNK)
            kv = tl.load(IDX + (e // NK) * si_q + e % NK, mask=e < NE, other=2147483647)
            begin += tl.sum((kv < tile).to(tl.int32), 0)
        end = begin
        for c0 in range(0, NE, CHUNK):
            e = c0 + tl.arange(0, CHUNK)
            kv = tl.load(IDX + (e // NK) * si_q + e % NK, mask=e < NE, other=2147483647)
            hit = (kv == tile).to(tl.int32)
            tl.store(SRC + end + tl.cumsum(hit, 0) - 1, e // NK, mask=hit > 0)
            end += tl.sum(hit, 0)
        tl.store(PTR + tile, begin)
        if tile == n_tiles - 1:
            tl.store(PTR + n_tiles, end)


@triton.autotune(configs=_stream_configs("BLOCK_N"), key=_TUNE_KEY,
                 prune_configs_by={"early_config_prune": _prune_for_fixed_block("BLOCK_M")})
@triton.jit
def _bs_bwd_dq_kernel(
    Q, K, V, O, DO, DQ, LSE, GLSE, WS, IDX, ORD,
    sq_b, sq_y, sq_x, sq_c, sk_b, sk_y, sk_x, sk_c, sv_b, sv_y, sv_x, sv_c, sout_b, sout_y, sout_x, sout_c,
    so_b, so_y, so_x, so_c, sg_b, sg_y, sg_x, sg_c, sl_b, sl_y, sl_x, sl_h, si_b, si_q, sord_b,
    H, NQ, n_tiles, q_split, group, dq_programs, sm_scale, lists_off, ptr_off, x_len,
    TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, T: tl.constexpr, NK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr,
    WIDE: tl.constexpr, FLAT: tl.constexpr, VARLEN: tl.constexpr, RAGGED: tl.constexpr, NK_P2: tl.constexpr,
    HAS_GLSE: tl.constexpr, ORDERED: tl.constexpr, SEQ: tl.constexpr, TMA: tl.constexpr, row_w,
):
    """The backward's first launch: programs below ``dq_programs`` compute dQ (and delta), the
    others the inverse routing lists for the dK/dV kernel (program (p, b * H + h) takes KV tile
    p * H + h of batch item b), so the lists cost no launch of their own. ``WS`` is the
    backward's fp32 workspace: the (log2 LSE, delta) pairs (LSE's layout and a pair axis), then the
    int32 lists (see :func:`_workspace`). ORDERED: ``ORD`` holds the query tiles' visit order,
    then the KV tiles' (the dK/dV kernel's)."""
    LD, SRC, PTR = _workspace(WS, lists_off, ptr_off)
    pid, b, h = _program(dq_programs + tl.cdiv(n_tiles, H), H, WIDE, FLAT)
    if pid < dq_programs:
        if ORDERED:
            pid = _visit(ORD + b * sord_b, pid, q_split)
        _dq_program(pid, b, h, Q, K, V, O, DO, DQ, LSE, GLSE, LD, IDX,
                    sq_b, sq_y, sq_x, sq_c, sk_b, sk_y, sk_x, sk_c, sv_b, sv_y, sv_x, sv_c,
                    sout_b, sout_y, sout_x, sout_c, so_b, so_y, so_x, so_c, sg_b, sg_y, sg_x, sg_c,
                    sl_b, sl_y, sl_x, sl_h, si_b, si_q, NQ, q_split, group, sm_scale, x_len,
                    TILES_X, TILE_H, TILE_W, T, NK, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, UPCAST, PRECISION, PACKED,
                    VARLEN, RAGGED, NK_P2, HAS_GLSE, SEQ, TMA, row_w)
    else:
        _inverse_lists(IDX + b * si_b, SRC + b * NQ * NK, PTR + b * (n_tiles + 1), si_q,
                       (pid - dq_programs) * H + h, NQ * NK, NK, n_tiles, CHUNK)


@triton.autotune(configs=_stream_configs("BLOCK_M"), key=["T", "HEAD_DIM", "PRECISION", "BLOCK_N"],
                 prune_configs_by={"early_config_prune": _prune_for_fixed_block("BLOCK_N")})
@triton.jit
def _bs_bwd_dkv_kernel(
    Q, K, V, DO, DK, DV, WS, ORD,
    sq_b, sq_y, sq_x, sq_c, sk_b, sk_y, sk_x, sk_c, sv_b, sv_y, sv_x, sv_c,
    so_b, so_y, so_x, so_c, sdk_b, sdk_y, sdk_x, sdk_c, sdv_b, sdv_y, sdv_x, sdv_c,
    sl_b, sl_y, sl_x, sl_h, ss_b, sp_b, sord_b, NQ,
    H, n_tiles, kv_split, group, sm_scale, lists_off, ptr_off, x_len,
    TILES_X: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, T: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    GROUP_P2: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr,
    WIDE: tl.constexpr, FLAT: tl.constexpr, RAGGED: tl.constexpr, ORDERED: tl.constexpr, SEQ: tl.constexpr,
    TMA: tl.constexpr, row_w,
):
    LD, SRC, PTR = _workspace(WS, lists_off, ptr_off)
    pid, b, h = _program(tl.cdiv(n_tiles, group) * kv_split, H, WIDE, FLAT)
    if ORDERED:   # the KV tiles' order follows the NQ query tiles' in ORD
        pid = _visit(ORD + b * sord_b + NQ, pid, kv_split)

    tile0, member, tile, offs_n, n_valid = _fixed_rows(pid, kv_split, group, n_tiles, T, BLOCK_N, PACKED)
    if RAGGED:
        n_valid = n_valid & _in_width(tile, offs_n, TILES_X, TILE_W, x_len)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < HEAD_DIM
    ch = h * HEAD_DIM + offs_d
    kvmask = n_valid[:, None] & d_valid[None, :]

    k = tl.load(_rows_ptr(K + b * sk_b, tile, offs_n, ch, TILES_X, TILE_H, TILE_W, sk_y, sk_x, sk_c),
                mask=kvmask, other=0.0)
    v = tl.load(_rows_ptr(V + b * sv_b, tile, offs_n, ch, TILES_X, TILE_H, TILE_W, sv_y, sv_x, sv_c),
                mask=kvmask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)

    qk_scale = sm_scale * 1.4426950408889634
    l_bh = b * sl_b + h * sl_h   # int64 (and so are the row offsets) only when WIDE
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    # the group's inverse lists are adjacent in SRC; bounds[g] = start of member g + 1's list
    begin = tl.load(PTR + b * sp_b + tile0)
    if PACKED:
        end = tl.load(PTR + b * sp_b + tl.minimum(tile0 + group, n_tiles))
        g_next = tl.arange(0, GROUP_P2) + 1
        bounds = tl.load(PTR + b * sp_b + tile0 + g_next, mask=(g_next < group) & (tile0 + g_next < n_tiles),
                         other=2147483647)
    else:
        end = tl.load(PTR + b * sp_b + tile0 + 1)
    m_total = (end - begin) * T
    qd = _row_descriptor(Q + b * sq_b, x_len, row_w, sq_x, BLOCK_M, BLOCK_D, TMA)
    dod = _row_descriptor(DO + b * so_b, x_len, row_w, so_x, BLOCK_M, BLOCK_D, TMA)
    if SEQ and T % BLOCK_M == 0:
        n_steps = m_total // BLOCK_M
    else:
        n_steps = tl.cdiv(m_total, BLOCK_M)
    for step in range(0, n_steps):
        if SEQ and T % BLOCK_M == 0:   # one query tile per step (see _seq_rows)
            STEPS: tl.constexpr = T // BLOCK_M
            entry = begin + step // STEPS
            q_tile = tl.load(SRC + b * ss_b + entry)
            q, offs, m_valid = _seq_rows(Q + b * sq_b, qd, q_tile, step % STEPS, h * HEAD_DIM, ch * sq_c, d_valid,
                                         sq_y, sq_x, x_len, TILES_X, T, BLOCK_M, RAGGED, TMA)
            do, offs, m_valid = _seq_rows(DO + b * so_b, dod, q_tile, step % STEPS, h * HEAD_DIM, ch * so_c, d_valid,
                                          so_y, so_x, x_len, TILES_X, T, BLOCK_M, RAGGED, TMA)
            l_off = (q_tile // TILES_X) * sl_y + offs * sl_x + l_bh
        else:
            offs_m = step * BLOCK_M + tl.arange(0, BLOCK_M)
            m_valid = offs_m < m_total
            entry = begin + offs_m // T
            q_tile = tl.load(SRC + b * ss_b + entry, mask=m_valid, other=0)
            t = offs_m % T
            if RAGGED:
                m_valid = m_valid & _in_width(q_tile, t, TILES_X, TILE_W, x_len)
            qmask = m_valid[:, None] & d_valid[None, :]
            l_off = _token_offsets(q_tile, t, TILES_X, TILE_H, TILE_W, sl_y, sl_x) + l_bh
            q = tl.load(_rows_ptr(Q + b * sq_b, q_tile, t, ch, TILES_X, TILE_H, TILE_W, sq_y, sq_x, sq_c),
                        mask=qmask, other=0.0)
            do = tl.load(_rows_ptr(DO + b * so_b, q_tile, t, ch, TILES_X, TILE_H, TILE_W, so_y, so_x, so_c),
                         mask=qmask, other=0.0)
        lse, delta = load_lse_delta(LD, l_off, m_valid)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
        p = tl.exp2(s - lse[:, None])
        if PACKED:
            owner = tl.sum((entry[:, None] >= bounds[None, :]).to(tl.int32), 1)
            p = tl.where(m_valid[:, None] & n_valid[None, :] & (owner[:, None] == member[None, :]), p, 0.0)
        else:
            p = tl.where(m_valid[:, None] & n_valid[None, :], p, 0.0)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)

    tl.store(_rows_ptr(DK + b * sdk_b, tile, offs_n, ch, TILES_X, TILE_H, TILE_W, sdk_y, sdk_x, sdk_c),
             (dk * sm_scale).to(DK.dtype.element_ty), mask=kvmask)
    tl.store(_rows_ptr(DV + b * sdv_b, tile, offs_n, ch, TILES_X, TILE_H, TILE_W, sdv_y, sdv_x, sdv_c),
             dv.to(DV.dtype.element_ty), mask=kvmask)


_bs_fwd = Launcher(_bs_fwd_kernel)
_bs_bwd_dq = Launcher(_bs_bwd_dq_kernel)
_bs_bwd_dkv = Launcher(_bs_bwd_dkv_kernel)


# fixed-side block cap per kernel for sequence tiles over 64 tokens: 128-row forward blocks ran 3%
# faster than 64 on radial attention at Wan 480p, 128-row dK/dV blocks 25% slower, dQ even
# (probe61); BiFormer's 16x16-token regions ran their forward 10% slower with 128 rows (probe64)
MAX_FIXED_ROWS = {"forward": 128, "dq": 64, "dkv": 64}


def _tile_block(tile: tuple[int, int], kernel: str = "forward") -> tuple[int, int, int]:
    """Rows of the fixed-side block (>= 16 for tl.dot), the programs per tile (a big tile is
    chunked) and the tiles per program (small tiles are packed): (block, split, group). 2-D
    tiles (BiFormer's regions) take at most 64 rows; sequence tiles of over 64 tokens up to
    ``MAX_FIXED_ROWS[kernel]``."""
    tokens = tile[0] * tile[1]
    cap = MAX_FIXED_ROWS[kernel] if tokens > 64 and tile[0] == 1 else 64
    block = 16 if interpret_mode() else min(cap, max(16, next_power_of_2(tokens)))
    if tokens > block // 2:
        return block, cdiv(tokens, block), 1
    return block, 1, block // tokens


def _block_d(head_dim: int) -> int:
    return max(16, next_power_of_2(head_dim))


def _meta(head_dim: int, dtype: torch.dtype, group: int) -> dict:
    """Meta-parameters every block-sparse kernel takes."""
    upcast, precision = dot_precision(dtype)
    return dict(HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), UPCAST=upcast, PRECISION=precision, PACKED=group > 1)


def _geometry(X: int, tile: tuple[int, int], nk: int | None = None) -> dict:
    """The kernels' constexpr tile grid: tiles per row (the last may overhang the map: RAGGED),
    tile height and width, tokens per tile, and the routed tiles per query tile (NK; the dK/dV
    kernel, which reads the inverse lists, has none)."""
    th, tw = tile
    return dict(TILES_X=cdiv(X, tw), TILE_H=th, TILE_W=tw, T=th * tw, RAGGED=X % tw != 0,
                **({} if nk is None else {"NK": nk}))


def _lists(nk: int, varlen: bool) -> dict:
    """Meta-parameters of the kernels that read the KV lists: padded lists (VARLEN) and the
    power of two their length is loaded in. (One index load per streamed block instead of one
    per row made no difference on radial attention at Wan 480p, 5.72 vs 5.69 ms, so rows keep
    theirs: measured at e0aff21.)"""
    return dict(VARLEN=varlen, NK_P2=max(2, next_power_of_2(nk)))


USE_TMA = True   # off: the SEQ kernels load by pointers (tests run both)
# Walks shorter than this (tokens a program streams: its list's length times the tile's tokens) keep
# pointer loads: each program builds its descriptors before its first load, which short walks do not
# repay. H200, bf16, probe66 (``attend_lists``), TMA / pointer time, forward and forward+backward;
# session 28's runs 1 and 3 (two machines; run 2 agreed with run 3): 256-token walks 1.07 / 1.11 and
# 1.00 / 1.04 (D128), 1.14 / 1.08 and 1.11 / 1.10 (D64); 512: 1.02 / 1.05 and 0.94 / 0.96; 1024: 0.99
# / 1.03 and 0.94 / 0.93; 2048: 0.96 / 1.00 and 0.90 / 0.92; 4096: 0.86 / 0.97 and 0.82 / 0.88.
TMA_MIN_WALK = 512


def _tma_min_walk() -> int | None:
    """The TMA walk threshold the launches are bound with (None: ``USE_TMA`` off)."""
    return TMA_MIN_WALK if USE_TMA else None


def _seq(Y: int, X: int, C: int, tile: tuple[int, int], group: int, num_heads: int, dtype: torch.dtype,
         device: int, align: tuple[int, ...], streamed: tuple[tuple[int, ...], ...], tma_min_walk: int | None,
         walk: int) -> dict:
    """Meta-parameters of the sequence fast path. SEQ: tiles one token high and unpacked, so a
    streamed step reads one listed tile's contiguous run of rows (a scalar tile id per step, not
    per-row ids and offsets). TMA: those runs are loaded through tensor descriptors, where the
    hardware, the layout and the walk allow it: 16-bit inputs on sm_90+, a power-of-two head dim,
    16-byte aligned tensors, streamed maps (``streamed``: their [B, Y, X, C] strides) whose tokens
    hold their channels in one contiguous row of width ``row_w``, and walks (``walk``: the tokens
    one program streams, from the longest list) of at least ``tma_min_walk`` (None: never).
    Radial attention's forward at Wan 480p on the H200 (probe63): 6.46 ms with per-row
    addressing, 5.54 with SEQ's pointer loads, 4.72 with TMA. The interpreter runs descriptors
    too (CI covers that path)."""
    seq = tile[0] == 1 and group == 1
    head_dim = C // num_heads
    row_w = (Y - 1) * streamed[0][1] + C
    tma = (seq and tma_min_walk is not None and walk >= tma_min_walk and hasattr(tl, "make_tensor_descriptor")
           and _block_d(head_dim) == head_dim
           and all(a == 0 for a in align)
           and all(st[3] == 1 and st[1] == streamed[0][1] and (Y == 1 or row_w <= st[2])
                   and (st[0] * dtype.itemsize) % 16 == 0 and (st[2] * dtype.itemsize) % 16 == 0 for st in streamed))
    if tma and not interpret_mode():
        tma = dtype in (torch.float16, torch.bfloat16) and device >= 0 and torch.cuda.get_device_capability(device)[0] >= 9
    return dict(SEQ=seq, TMA=tma, row_w=row_w)


def _int32(index: torch.Tensor) -> torch.Tensor:
    return index if index.dtype == torch.int32 and index.is_contiguous() else index.to(torch.int32).contiguous()


def _order(order: torch.Tensor) -> torch.Tensor:
    """A visit order as the kernels read it: int32 [B, n] with unit stride along n (a batch-shared
    order may be expanded: batch stride 0)."""
    if order.dtype != torch.int32 or order.stride(-1) != 1:
        order = order.to(torch.int32).contiguous()
    return order


@functools.lru_cache(maxsize=256)
def forward_launch(device: int, B: int, Y: int, X: int, C: int, tile: tuple[int, int], nq: int, nk: int,
                   num_heads: int, dtype: torch.dtype, scale: float, strides: tuple[int, ...],
                   align: tuple[int, ...], varlen: bool = False, order_stride: int | None = None,
                   tma_min_walk: int | None = TMA_MIN_WALK) -> BoundLaunch:
    """The forward's launch for one problem, bound once (routed attention runs per block of a
    model: its host cost is part of the step). It is called with (q, k, v, out, lse, idx, order):
    q/k/v in ``dtype``, out in ``dtype``, lse float32, idx int32, with these ``strides`` (4 each,
    idx 2) and :func:`alignment`. ``order_stride``: the batch stride of an int32 visit order
    (:func:`~ops.common.block_index.visit_order`, query tiles first); None: tiles in their natural
    order, and ``order`` is not read (pass any tensor, e.g. idx)."""
    for j, name in enumerate(("q", "k", "v")):
        check_span(name, (B, Y, X, C), strides[4 * j:4 * j + 4])
    th, tw = tile
    T = th * tw
    bm, q_split, group = _tile_block(tile, "forward")
    if (varlen or order_stride is not None) and group > 1:
        raise ValueError(f"variable-length KV lists and visit orders need tiles of at least 16 tokens, got {T}")
    grid = heads_grid(cdiv(nq, group) * q_split, B * num_heads)
    args = (num_heads, nq, q_split, group, scale * LOG2E, X)
    dense, lse = (B, Y, X, C), (B, Y, X, num_heads)
    wide = wide_offsets(*((dense, strides[4 * j:4 * j + 4]) for j in range(4)), (lse, strides[16:20]),
                        ((B, nq, nk), (*strides[20:22], 1)))
    meta = dict(BLOCK_M=bm, WIDE=wide, FLAT=len(grid) == 1, ORDERED=order_stride is not None,
                **_geometry(X, tile, nk), **_meta(C // num_heads, dtype, group), **_lists(nk, varlen),
                **_seq(Y, X, C, tile, group, num_heads, dtype, device, align, (strides[4:8], strides[8:12]),
                       tma_min_walk, nk * T))
    # the site holds what Triton specializes on; the scale, a float, is not
    site = (device, B, Y, X, C, tile, nq, nk, num_heads, dtype, strides, align, varlen, order_stride, bm,
            tma_min_walk)
    return _bs_fwd.bind(site, grid, (*strides, order_stride or 0, *args), meta)


@functools.lru_cache(maxsize=256)
def backward_launches(device: int, B: int, Y: int, X: int, C: int, tile: tuple[int, int], nq: int, nk: int,
                      num_heads: int, dtype: torch.dtype, scale: float, strides: tuple[tuple[int, ...], ...],
                      align: tuple[int, ...], varlen: bool = False, lse_grad: bool = False,
                      order_stride: int | None = None,
                      tma_min_walk: int | None = TMA_MIN_WALK) -> tuple[BoundLaunch, BoundLaunch, int]:
    """The backward's two launches for one problem, bound once, and the float32 workspace size.

    ``strides`` are those of (q, k, v, out, grad_out, dq, dk, dv, lse, idx); ``align`` is their
    :func:`alignment` (the workspace ``ws`` is a fresh allocation, always aligned). The dQ launch is
    called with (q, k, v, out, grad_out, dq, lse, grad_lse, ws, idx, order), the dK/dV launch with
    (q, k, v, grad_out, dk, dv, ws, order); ``grad_lse`` (LSE's strides) is read only when
    ``lse_grad`` (otherwise pass ``lse`` in its place), ``order`` (int32, the query tiles' visit
    order then the KV tiles', batch stride ``order_stride``) only when ``order_stride`` is not
    None (otherwise pass any tensor)."""
    qs, ks, vs, os_, gs, dqs, dks, dvs, ls, is_ = strides
    for name, st in (("q", qs), ("k", ks), ("v", vs), ("out", os_), ("grad_out", gs)):
        check_span(name, (B, Y, X, C), st)
    th, tw = tile
    T = th * tw
    n_tiles = (Y // th) * cdiv(X, tw)
    ne = nq * nk
    n_delta = B * Y * X * num_heads
    block, split, group = _tile_block(tile, "dq")
    ordered = order_stride is not None
    if ordered and (group > 1 or _tile_block(tile, "dkv")[2] > 1):
        raise ValueError(f"visit orders need tiles of at least 16 tokens, got {T}")
    wide = wide_offsets(*(((B, Y, X, C), st) for st in strides[:8]), ((B, Y, X, num_heads), ls),
                        ((B, nq, nk), (*is_, 1)))
    common = dict(WIDE=wide, **_meta(C // num_heads, dtype, group))
    site = (device, B, Y, X, C, tile, nq, nk, num_heads, dtype, strides, align, varlen, lse_grad, order_stride,
            tma_min_walk, block, _tile_block(tile, "dkv")[0])
    # launch 1: dQ programs (storing (log2 LSE, delta = rowsum(dO * O)) on the way), then cdiv(n_tiles, H)
    # more per (b, h) that build the inverse lists
    dq_programs = cdiv(nq, group) * split
    grid = heads_grid(dq_programs + cdiv(n_tiles, num_heads), B * num_heads)
    dq = _bs_bwd_dq.bind(
        site, grid,
        (*qs, *ks, *vs, *os_, *gs, *dqs, *ls, *is_, order_stride or 0, num_heads, nq, n_tiles, split,
         group, dq_programs, scale, 2 * n_delta, B * ne, X),
        dict(BLOCK_M=block, CHUNK=max(16, min(next_power_of_2(ne), 1024)), FLAT=len(grid) == 1, HAS_GLSE=lse_grad,
             ORDERED=ordered, **_geometry(X, tile, nk), **_lists(nk, varlen), **common,
             **_seq(Y, X, C, tile, group, num_heads, dtype, device, align, (ks, vs), tma_min_walk, nk * T)))
    # launch 2: dK/dV programs own BLOCK_N rows (a chunk of one KV tile, or a group of small
    # tiles) and stream BLOCK_M query rows at a time
    block, split, group = _tile_block(tile, "dkv")
    grid = heads_grid(cdiv(n_tiles, group) * split, B * num_heads)
    dkv = _bs_bwd_dkv.bind(
        site, grid,
        (*qs, *ks, *vs, *gs, *dks, *dvs, *ls, ne, n_tiles + 1, order_stride or 0, nq, num_heads, n_tiles, split,
         group, scale, 2 * n_delta, B * ne, X),
        dict(BLOCK_N=block, GROUP_P2=max(2, next_power_of_2(group)), FLAT=len(grid) == 1, ORDERED=ordered,
             **_geometry(X, tile), **common,
             # a KV tile's inverse list: the lists' entries spread over the tiles
             **_seq(Y, X, C, tile, group, num_heads, dtype, device, align, (qs, gs), tma_min_walk,
                    cdiv(ne, n_tiles) * T)))
    # the (log2 LSE, delta) pairs, then the inverse CSR lists (int32: src, ptr), in one float32 buffer
    return dq, dkv, 2 * n_delta + B * (ne + n_tiles + 1)


def block_sparse_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_index: torch.Tensor, tile: tuple[int, int],
    num_heads: int, scale: float, out: torch.Tensor | None = None, lse: torch.Tensor | None = None,
    varlen: bool = False, order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of tile-sparse attention.

    Args:
        q, k, v: [B, Y, X, C] (any strides), C = num_heads * head_dim, Y a multiple of
            ``tile_h``; X a multiple of ``tile_w``, or Y = tile_h = 1 (a sequence whose last tile
            overhangs it: its missing tokens are neither queries nor keys).
        kv_index: [B, NQ, NK] integer KV tile ids per query tile (NQ = number of tiles). With
            ``varlen`` a list may end early: its remaining entries hold ``PAD``; an empty list
            gives output 0 and LSE -inf.
        tile: (tile_h, tile_w). scale: softmax scale.
        out / lse: optional preallocated [B, Y, X, C] / [B, Y, X, H] float32 buffers.
        order: optional int32 [B, NQ + n_tiles] visit order (``block_index.visit_order``; batch
            stride 0 when shared): programs take the query tiles in the order of its first NQ
            entries. Tiles of at least 16 tokens only.
    Returns:
        out [B, Y, X, C] in q's dtype and the natural-log LSE [B, Y, X, H] (float32).
    """
    B, Y, X, C = q.shape
    nq, nk = kv_index.shape[1:]
    idx = _int32(kv_index)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if lse is None:
        lse = torch.empty((B, Y, X, num_heads), device=q.device, dtype=torch.float32)
    tensors = (q, k, v, out, lse, idx, idx if order is None else _order(order))
    strides = (*q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(), *idx.stride()[:2])
    launch = forward_launch(q.get_device(), B, Y, X, C, tuple(tile), nq, nk, num_heads, q.dtype, scale, strides,
                            alignment(*tensors), varlen, None if order is None else tensors[-1].stride(0), _tma_min_walk())
    if launch.meta["TMA"]:
        scratch_allocator()
    launch(*tensors)
    return out, lse


def block_sparse_attention_backward(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, kv_index: torch.Tensor, tile: tuple[int, int], num_heads: int, scale: float,
    dq: torch.Tensor | None = None, dk: torch.Tensor | None = None, dv: torch.Tensor | None = None,
    varlen: bool = False, grad_lse: torch.Tensor | None = None, order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of :func:`block_sparse_attention_forward`: (dq, dk, dv), each [B, Y, X, C].
    ``grad_lse`` [B, Y, X, H]: the gradient of the returned LSE, if it has one. ``order``: the
    forward's visit order (its last n_tiles entries order the dK/dV programs' KV tiles)."""
    B, Y, X, C = q.shape
    nq, nk = kv_index.shape[1:]
    idx = _int32(kv_index)
    lse = lse.contiguous()
    glse = lse if grad_lse is None else grad_lse.to(torch.float32).contiguous()
    dq = torch.empty_like(q, memory_format=torch.contiguous_format) if dq is None else dq
    dk = torch.empty_like(k, memory_format=torch.contiguous_format) if dk is None else dk
    dv = torch.empty_like(v, memory_format=torch.contiguous_format) if dv is None else dv
    order = idx if order is None else _order(order)
    strides = tuple(t.stride() for t in (q, k, v, out, grad_out, dq, dk, dv, lse)) + (idx.stride()[:2],)
    dq_launch, dkv_launch, n_ws = backward_launches(
        q.get_device(), B, Y, X, C, tuple(tile), nq, nk, num_heads, q.dtype, scale, strides,
        alignment(q, k, v, out, grad_out, dq, dk, dv, lse, idx, glse, order), varlen, grad_lse is not None,
        None if order is idx else order.stride(0), _tma_min_walk())
    if dq_launch.meta["TMA"] or dkv_launch.meta["TMA"]:
        scratch_allocator()
    ws = torch.empty(n_ws, device=q.device, dtype=torch.float32)
    dq_launch(q, k, v, out, grad_out, dq, lse, glse, ws, idx, order)
    dkv_launch(q, k, v, grad_out, dk, dv, ws, order)
    return dq, dk, dv
