"""Triton kernels for chunked gated linear attention, both directions in the same launches.

Tokens are cut into chunks of ``BT = 64``. Per direction, ``L`` is the chunk-local running sum of
the log gates in the scan's order (prefix for causal, suffix for reverse). Six launches:

- The state scan writes the [K, V] state entering each chunk, ``h`` (input dtype), in two
  launches: ``_chunk_updates`` (grid K-tiles x V-tiles, chunks, directions * B*H) computes every
  chunk's own update ``(k * exp(decay to the exit))^T v`` and total decay at once, over
  [channels, tokens] tiles in scan order; ``_carry_states`` (grid tiles, B*H, directions) carries
  ``S <- exp(sum g) S + update`` across the chunks, the only sequential part, elementwise. The
  backward runs both the other way round on ``(scale q, do)`` for ``dh``.
- ``_chunk_output`` (grid V-tiles, chunks, B*H): the chunk's output, both directions summed: the
  inter-chunk term ``(q * exp(L)) h`` plus the intra-chunk one. A chunk whose gates sum to no
  less than ``-FAST_LIMIT`` per channel takes whole-chunk tensor-core dots with the decays split
  at half its total (factors within ``e^(FAST_LIMIT / 2)``); any other chunk runs 16-row
  sub-blocks: earlier sub-blocks through dots with the decays split at the sub-block's edge (both
  factors ``<= 1``), its own 16x16 block with exact pairwise decays over [16, 16, K]. So strong
  forgetting never overflows and every exponent is a direct sum of the gates between its ends.
- ``_chunk_grads`` (grid chunks, B*H): dq, dk, dv of both directions with the same two paths; per
  direction ``dL = q dq - k dk`` without each token's own pair (fp32) and the gradient of the
  chunk's total decay, which ``_gate_grads`` (grid chunks, B*H, directions) turns into the gate
  gradients by chunk-local sums (suffix for causal, prefix for reverse): a sequence-long sum of
  dL would cancel large terms and lose fp32 digits.
Math in fp32; dots take input-dtype operands (fp32: IEEE) with fp32 accumulation.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..common import dot_precision, interpret_mode
from ..common.tuning import Launcher, cdiv, next_power_of_2

__all__ = ["BT", "gla_backward", "gla_forward"]

BT = 64   # chunk length
BS = 16   # sub-block of the intra-chunk terms


@triton.jit
def _rows(ptr, base, rows, st, cols, T, n):
    """[rows, cols] tile of one (batch, head) of a [B, T, H, n] tensor, fp32, zeros outside."""
    mask = (rows[:, None] < T) & (cols[None, :] < n)
    return tl.load(ptr + base + rows[:, None] * st + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _scan(g, REVERSE: tl.constexpr):
    """Inclusive running sum along the rows in scan order (down for causal, up for reverse)."""
    return tl.cumsum(g, 0, reverse=REVERSE)


@triton.jit
def _rscan(g, REVERSE: tl.constexpr):
    """Inclusive running sum against the scan order."""
    return tl.cumsum(g, 0, reverse=not REVERSE)


@triton.jit
def _next_rows(G, base, rows, st, ck, T, K, lo, hi, REVERSE: tl.constexpr):
    """The gates of each row's successor in scan order, fp32, zero where it leaves [lo, hi) or T:
    running sums of them are the exclusive sums (strictly after a row) as direct sums of
    same-signed terms, never a difference of two long sums (which would round away the small
    decays that matter)."""
    nxt = rows - 1 if REVERSE else rows + 1
    mask = (nxt[:, None] >= lo) & (nxt[:, None] < hi) & (nxt[:, None] < T) & (ck[None, :] < K)
    return tl.load(G + base + nxt[:, None] * st + ck[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _chunk_updates(X, Y, G0, G1, U, D,
                   sxb, sxt, sxh, syb, syt, syh, s0b, s0t, s0h, s1b, s1t, s1h,
                   T, NH, NT, BH, x_scale,
                   K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   DIR0: tl.constexpr, BACKWARD: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """The state scan's first phase, every chunk at once: a chunk's own contribution to the state
    at its exit, ``U = (x * exp(decay to the exit))^T y`` ([BK, BV] tile, fp32), and its total
    decay ``exp(sum g)`` ([K], fp32, written by the first V-tile).

    Forward (X = k, Y = v): the decay after the row, to the chunk's exit. Backward (X = q, Y = do,
    x_scale = scale): the gradient of the state, scanned the other way, with the row's own gate
    included (the query sees its own decay).
    """
    pid_kv = tl.program_id(0)
    c = tl.program_id(1)
    sb = tl.program_id(2)                # slot * BH + bh
    slot = sb // BH
    bh = sb % BH
    nv = tl.cdiv(V, BV)
    k0 = (pid_kv // nv) * BK
    v0 = (pid_kv % nv) * BV
    b = (bh // NH).to(tl.int64)
    h = bh % NH
    d = DIR0 + slot                      # 0: causal, 1: reverse
    scan_reverse = (d == 1) != BACKWARD
    if d == 0:
        g_base = G0 + b * s0b + h * s0h
        sgt = s0t + 0 * bh               # a tensor in both branches (a stride of 1 arrives as a constant)
    else:
        g_base = G1 + b * s1b + h * s1h
        sgt = s1t + 0 * bh
    ck = k0 + tl.arange(0, BK)
    cv = v0 + tl.arange(0, BV)
    dt = tl.float32 if UPCAST else X.dtype.element_ty
    r = tl.arange(0, BT)
    # [channels, tokens] tiles in scan order (tokens reversed when the scan runs backward), so that
    # every direction's decay toward the chunk's exit is one suffix sum along the tile
    if scan_reverse:
        tok = BT - 1 - r
        nxt = BT - 2 - r
    else:
        tok = r
        nxt = r + 1
    rows = c * BT + tok
    kmask = (ck[:, None] < K) & (rows[None, :] < T)
    g = tl.load(g_base + rows[None, :] * sgt + ck[:, None], mask=kmask, other=0.0).to(tl.float32)
    x = tl.load(X + b * sxb + h * sxh + rows[None, :] * sxt + ck[:, None], mask=kmask, other=0.0).to(tl.float32)
    y = tl.load(Y + b * syb + h * syh + rows[:, None] * syt + cv[None, :],
                mask=(rows[:, None] < T) & (cv[None, :] < V), other=0.0).to(dt)
    total = tl.sum(g, 1)
    # log decay from the token to the chunk's exit: over its successors in the forward (the next
    # token's gate onward, a direct sum), including its own gate in the backward
    if not BACKWARD:
        nrows = c * BT + nxt
        g = tl.load(g_base + nrows[None, :] * sgt + ck[:, None],
                    mask=(ck[:, None] < K) & (r[None, :] < BT - 1) & (nrows[None, :] < T), other=0.0).to(tl.float32)
    xe = (x * (x_scale * tl.exp(tl.cumsum(g, 1, reverse=True)))).to(dt)
    u = tl.dot(xe, y, input_precision=PRECISION)
    chunk = (sb * NT + c).to(tl.int64)
    tl.store(U + chunk * (K * V) + ck[:, None] * V + cv[None, :], u, mask=(ck[:, None] < K) & (cv[None, :] < V))
    if v0 == 0:
        tl.store(D + chunk * K + ck, tl.exp(total), mask=ck < K)


@triton.jit
def _carry_states(U, D, Hs, NT, BH, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                  DIR0: tl.constexpr, BACKWARD: tl.constexpr):
    """The state scan's second phase: carry a [BK, BV] state tile across the chunks in scan order,
    ``S <- exp(sum g) S + U``, storing the state at each chunk's entry (input dtype). Only this
    elementwise recurrence is sequential; its loads do not depend on the state, so they are
    prefetched (the fused scan it replaced walked each chunk's loads, exponentials and dot in
    turn: ~5 us per chunk at ViG's size)."""
    pid_kv = tl.program_id(0)
    bh = tl.program_id(1)
    slot = tl.program_id(2)
    nv = tl.cdiv(V, BV)
    ck = (pid_kv // nv) * BK + tl.arange(0, BK)
    cv = (pid_kv % nv) * BV + tl.arange(0, BV)
    scan_reverse = ((DIR0 + slot) == 1) != BACKWARD
    h_off = ck[:, None] * V + cv[None, :]
    h_mask = (ck[:, None] < K) & (cv[None, :] < V)
    first = ((slot * BH + bh).to(tl.int64) * NT)
    state = tl.zeros([BK, BV], dtype=tl.float32)
    for it in range(NT):
        c = tl.where(scan_reverse, NT - 1 - it, it)
        chunk = first + c
        tl.store(Hs + chunk * (K * V) + h_off, state.to(Hs.dtype.element_ty), mask=h_mask)
        u = tl.load(U + chunk * (K * V) + h_off, mask=h_mask, other=0.0)
        decay = tl.load(D + chunk * K + ck, mask=ck < K, other=0.0)
        state = state * decay[:, None] + u


@triton.jit
def _block_decays(g_full, gn_full, g_i, rloc, i, REVERSE: tl.constexpr, BS: tl.constexpr):
    """Log decays of sub-block i of a chunk, every one a direct sum of the gates between its ends:
    (rows before the block in scan order [BT], the block's running sums from its entry [BS, BK],
    from the chunk's entry [BS, BK], and for each earlier row the sum strictly after it up to the
    block's entry [BT, BK])."""
    if REVERSE:
        before = rloc >= (i + 1) * BS
        next_before = rloc - 1 >= (i + 1) * BS
    else:
        before = rloc < i * BS
        next_before = rloc + 1 < i * BS
    carry = tl.sum(tl.where(before[:, None], g_full, 0.0), 0)
    run_i = _scan(g_i, REVERSE)
    to_entry = _rscan(tl.where(next_before[:, None], gn_full, 0.0), REVERSE)
    return before, run_i, carry[None, :] + run_i, to_entry


@triton.jit
def _pair_decays(run_i, REVERSE: tl.constexpr, BS: tl.constexpr, STRICT: tl.constexpr):
    """exp(L_t - L_s) over a diagonal [BS, BS] block for the pairs the direction keeps, else 0:
    [BS (t), BS (s), BK], every exponent <= 0. STRICT leaves out the token's own pair (t = s)."""
    r = tl.arange(0, BS)
    if REVERSE:
        keep = r[:, None] < r[None, :] if STRICT else r[:, None] <= r[None, :]
    else:
        keep = r[:, None] > r[None, :] if STRICT else r[:, None] >= r[None, :]
    keep3 = keep[:, :, None]
    return tl.where(keep3, tl.exp(tl.where(keep3, run_i[:, None, :] - run_i[None, :, :], 0.0)), 0.0)


@triton.jit
def _direction_output(q_i, k_i, v_i, g_i, k_full, v_full, g_full, gn_full, rloc, i, h_tile,
                      REVERSE: tl.constexpr, BS: tl.constexpr, dt: tl.constexpr, PRECISION: tl.constexpr):
    """One direction's output rows of sub-block i ([BS, BV], fp32); q_i is pre-scaled."""
    before, run_i, from_entry, to_entry = _block_decays(g_full, gn_full, g_i, rloc, i, REVERSE, BS)
    acc = tl.dot((q_i * tl.exp(from_entry)).to(dt), h_tile, input_precision=PRECISION)
    # earlier sub-blocks: the decay s -> t splits at the block's entry into two factors <= 1
    qe = (q_i * tl.exp(run_i)).to(dt)
    ke = tl.where(before[:, None], k_full * tl.exp(tl.where(before[:, None], to_entry, 0.0)), 0.0)
    a = tl.dot(qe, tl.trans(ke.to(dt)), input_precision=PRECISION)
    acc += tl.dot(a.to(dt), v_full, input_precision=PRECISION)
    # its own block: exact pairwise decays
    a_d = tl.sum(q_i[:, None, :] * k_i[None, :, :] * _pair_decays(run_i, REVERSE, BS, False), 2)
    acc += tl.dot(a_d.to(dt), v_i, input_precision=PRECISION)
    return acc


@triton.jit
def _fast_output(q_full, k_full, v_full, g_full, h_tile, REVERSE: tl.constexpr, BT: tl.constexpr,
                 dt: tl.constexpr, PRECISION: tl.constexpr):
    """One direction's output of a whole chunk ([BT, BV], fp32) when its gates sum to no less than
    -FAST_LIMIT on every channel: the decays split at half the chunk's total into two factors
    within e^(+-FAST_LIMIT / 2), so the intra-chunk term is two tensor-core dots."""
    L = _scan(g_full, REVERSE)
    ref = 0.5 * tl.sum(g_full, 0)[None, :]
    a = tl.dot((q_full * tl.exp(L - ref)).to(dt), tl.trans((k_full * tl.exp(ref - L)).to(dt)),
               input_precision=PRECISION)
    r = tl.arange(0, BT)
    keep = (r[:, None] <= r[None, :]) if REVERSE else (r[:, None] >= r[None, :])
    a = tl.where(keep, a, 0.0)
    acc = tl.dot((q_full * tl.exp(L)).to(dt), h_tile, input_precision=PRECISION)
    return acc + tl.dot(a.to(dt), v_full, input_precision=PRECISION)


@triton.jit
def _fast_grads(q_full, k_full, v_full, do_full, g_full, h_tile, dh_tile, REVERSE: tl.constexpr, BT: tl.constexpr,
                dt: tl.constexpr, PRECISION: tl.constexpr):
    """``_direction_grads`` for a whole chunk whose gates allow ``_fast_output``'s split."""
    L = _scan(g_full, REVERSE)
    total = tl.sum(g_full, 0)[None, :]
    ref = 0.5 * total
    eq = tl.exp(L - ref)
    ek = tl.exp(ref - L)
    qe = (q_full * eq).to(dt)
    ke = (k_full * ek).to(dt)
    r = tl.arange(0, BT)
    keep = (r[:, None] < r[None, :]) if REVERSE else (r[:, None] > r[None, :])   # the token's own pair left out
    a = tl.where(keep, tl.dot(qe, tl.trans(ke), input_precision=PRECISION), 0.0)
    da = tl.where(keep, tl.dot(do_full.to(dt), tl.trans(v_full.to(dt)), input_precision=PRECISION), 0.0)
    e_out = tl.exp(total - L)
    dk_state = e_out * tl.dot(v_full.to(dt), tl.trans(dh_tile), input_precision=PRECISION)
    dq = eq * tl.dot(da.to(dt), ke, input_precision=PRECISION)
    dq += tl.exp(L) * tl.dot(do_full.to(dt), tl.trans(h_tile), input_precision=PRECISION)
    dk = ek * tl.dot(tl.trans(da.to(dt)), qe, input_precision=PRECISION) + dk_state
    dv = tl.dot(tl.trans(a.to(dt)), do_full.to(dt), input_precision=PRECISION)
    dv += tl.dot((k_full * e_out).to(dt), dh_tile, input_precision=PRECISION)
    return dq, dk, dv, tl.sum(k_full * dk_state, 0)


@triton.jit
def _chunk_output(Q, Kp, Vp, G0, G1, Hs, O,
                  sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, s0b, s0t, s0h, s1b, s1t, s1h,
                  T, NH, NT, scale,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr,
                  BV: tl.constexpr, HAS_F: tl.constexpr, HAS_B: tl.constexpr, UPCAST: tl.constexpr,
                  PRECISION: tl.constexpr, FAST_LIMIT: tl.constexpr):
    """Output of one chunk (and one V-tile), both directions summed: whole-chunk dots when the
    chunk's gates allow it, else 16-row sub-blocks with exact decays."""
    v0 = tl.program_id(0) * BV
    c = tl.program_id(1)
    bh = tl.program_id(2)
    b = (bh // NH).to(tl.int64)
    h = bh % NH
    BH = tl.num_programs(2)
    dt = tl.float32 if UPCAST else Q.dtype.element_ty
    ck = tl.arange(0, BK)
    cv = v0 + tl.arange(0, BV)
    rloc = tl.arange(0, BT)
    rows = c * BT + rloc
    q_base = b * sqb + h * sqh
    k_base = b * skb + h * skh
    v_base = b * svb + h * svh
    k_full = _rows(Kp, k_base, rows, skt, ck, T, K)
    v_full = _rows(Vp, v_base, rows, svt, cv, T, V).to(dt)
    h_off = ck[:, None] * V + cv[None, :]
    h_mask = (ck[:, None] < K) & (cv[None, :] < V)
    if HAS_F:
        gf_full = _rows(G0, b * s0b + h * s0h, rows, s0t, ck, T, K)
        gfn_full = _next_rows(G0, b * s0b + h * s0h, rows, s0t, ck, T, K, c * BT, c * BT + BT, False)
        hf = tl.load(Hs + ((bh * NT + c).to(tl.int64)) * (K * V) + h_off, mask=h_mask, other=0.0).to(dt)
    if HAS_B:
        gb_full = _rows(G1, b * s1b + h * s1h, rows, s1t, ck, T, K)
        gbn_full = _next_rows(G1, b * s1b + h * s1h, rows, s1t, ck, T, K, c * BT, c * BT + BT, True)
        hb = tl.load(Hs + ((((BH if HAS_F else 0) + bh) * NT + c).to(tl.int64)) * (K * V) + h_off, mask=h_mask,
                     other=0.0).to(dt)
    fast = True
    if HAS_F:
        fast = fast & (tl.min(tl.sum(gf_full, 0), 0) >= -FAST_LIMIT)
    if HAS_B:
        fast = fast & (tl.min(tl.sum(gb_full, 0), 0) >= -FAST_LIMIT)
    if fast:
        q_full = _rows(Q, q_base, rows, sqt, ck, T, K) * scale
        acc = tl.zeros([BT, BV], dtype=tl.float32)
        if HAS_F:
            acc += _fast_output(q_full, k_full, v_full, gf_full, hf, False, BT, dt, PRECISION)
        if HAS_B:
            acc += _fast_output(q_full, k_full, v_full, gb_full, hb, True, BT, dt, PRECISION)
        tl.store(O + (b * T + rows[:, None]) * (NH * V) + h * V + cv[None, :], acc.to(O.dtype.element_ty),
                 mask=(rows[:, None] < T) & (cv[None, :] < V))
        return
    for i in range(BT // BS):
        rows_i = c * BT + i * BS + tl.arange(0, BS)
        q_i = _rows(Q, q_base, rows_i, sqt, ck, T, K) * scale
        k_i = _rows(Kp, k_base, rows_i, skt, ck, T, K)
        v_i = _rows(Vp, v_base, rows_i, svt, cv, T, V).to(dt)
        acc = tl.zeros([BS, BV], dtype=tl.float32)
        if HAS_F:
            g_i = _rows(G0, b * s0b + h * s0h, rows_i, s0t, ck, T, K)
            acc += _direction_output(q_i, k_i, v_i, g_i, k_full, v_full, gf_full, gfn_full, rloc, i, hf, False, BS, dt,
                                     PRECISION)
        if HAS_B:
            g_i = _rows(G1, b * s1b + h * s1h, rows_i, s1t, ck, T, K)
            acc += _direction_output(q_i, k_i, v_i, g_i, k_full, v_full, gb_full, gbn_full, rloc, i, hb, True, BS, dt,
                                     PRECISION)
        o_ptr = O + (b * T + rows_i[:, None]) * (NH * V) + h * V + cv[None, :]
        tl.store(o_ptr, acc.to(O.dtype.element_ty), mask=(rows_i[:, None] < T) & (cv[None, :] < V))


@triton.jit
def _direction_grads(q_i, k_i, v_i, do_i, g_i, gn_i, q_full, k_full, v_full, do_full, g_full, gn_full, rloc, i,
                     h_tile, dh_tile, REVERSE: tl.constexpr, BS: tl.constexpr, dt: tl.constexpr,
                     PRECISION: tl.constexpr):
    """One direction's (dq, dk, dv) of sub-block i, fp32, without the terms of each token's own pair
    (t = s, no decay; the caller adds them): q dq - k dk then has no cancelling diagonal, which
    under strong forgetting is nearly all of both. q is pre-scaled and dq is w.r.t. it. Also
    returns sum_s k_s dk_s over the state term, part of the chunk-total decay's gradient."""
    before, run_i, from_entry, to_entry = _block_decays(g_full, gn_full, g_i, rloc, i, REVERSE, BS)
    if REVERSE:
        after = rloc < i * BS
    else:
        after = rloc >= (i + 1) * BS
    to_exit = _rscan(gn_i, REVERSE)                 # strictly after the row, to the block's exit
    # state terms
    e_out = tl.exp(to_exit + tl.sum(tl.where(after[:, None], g_full, 0.0), 0)[None, :])   # row -> chunk exit
    dq = tl.exp(from_entry) * tl.dot(do_i.to(dt), tl.trans(h_tile), input_precision=PRECISION)
    dk = e_out * tl.dot(v_i.to(dt), tl.trans(dh_tile), input_precision=PRECISION)
    kdk_state = tl.sum(k_i * dk, 0)                 # these keys' part of the chunk-total gradient
    dv = tl.dot((k_i * e_out).to(dt), dh_tile, input_precision=PRECISION)
    # as queries, against the earlier sub-blocks (split at the sub-block's entry)
    ke = tl.where(before[:, None], k_full * tl.exp(tl.where(before[:, None], to_entry, 0.0)), 0.0)
    da = tl.dot(do_i.to(dt), tl.trans(v_full.to(dt)), input_precision=PRECISION)           # [BS, BT]
    dq += tl.exp(run_i) * tl.dot(da.to(dt), ke.to(dt), input_precision=PRECISION)
    # as keys, against the later sub-blocks (split at the sub-block's exit)
    past_exit = _scan(tl.where(after[:, None], g_full, 0.0), REVERSE)
    pe = tl.where(after[:, None], q_full * tl.exp(tl.where(after[:, None], past_exit, 0.0)), 0.0)
    ke_i = k_i * tl.exp(to_exit)
    a_t = tl.dot(pe.to(dt), tl.trans(ke_i.to(dt)), input_precision=PRECISION)              # [BT, BS]
    dv += tl.dot(tl.trans(a_t.to(dt)), do_full.to(dt), input_precision=PRECISION)
    da_t = tl.dot(do_full.to(dt), tl.trans(v_i.to(dt)), input_precision=PRECISION)         # [BT, BS]
    dk += tl.exp(to_exit) * tl.dot(tl.trans(da_t.to(dt)), pe.to(dt), input_precision=PRECISION)
    # its own block, exact, the diagonal left out
    e = _pair_decays(run_i, REVERSE, BS, True)                                              # [t, s, BK]
    a_d = tl.sum(q_i[:, None, :] * k_i[None, :, :] * e, 2)
    da_d = tl.dot(do_i.to(dt), tl.trans(v_i.to(dt)), input_precision=PRECISION)
    dq += tl.sum(da_d[:, :, None] * k_i[None, :, :] * e, 1)
    dk += tl.sum(da_d[:, :, None] * q_i[:, None, :] * e, 0)
    dv += tl.dot(tl.trans(a_d.to(dt)), do_i.to(dt), input_precision=PRECISION)
    return dq, dk, dv, kdk_state


@triton.jit
def _chunk_grads(Q, Kp, Vp, G0, G1, Hs, DHs, DO, DQ, DK, DV, DL, DTOT,
                 sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, s0b, s0t, s0h, s1b, s1t, s1h,
                 T, NH, NT, scale,
                 K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr, HAS_F: tl.constexpr, HAS_B: tl.constexpr, UPCAST: tl.constexpr,
                 PRECISION: tl.constexpr, FAST_LIMIT: tl.constexpr):
    """dq, dk, dv of one chunk (both directions summed); per direction, dL = q dq - k dk (the
    gradient of the chunk-local running log decays) and the gradient of the chunk's total decay."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // NH).to(tl.int64)
    h = bh % NH
    BH = tl.num_programs(1)
    dt = tl.float32 if UPCAST else Q.dtype.element_ty
    ck = tl.arange(0, BK)
    cv = tl.arange(0, BV)
    rloc = tl.arange(0, BT)
    rows = c * BT + rloc
    q_base = b * sqb + h * sqh
    k_base = b * skb + h * skh
    v_base = b * svb + h * svh
    q_full = _rows(Q, q_base, rows, sqt, ck, T, K) * scale
    k_full = _rows(Kp, k_base, rows, skt, ck, T, K)
    v_full = _rows(Vp, v_base, rows, svt, cv, T, V)
    do_full = _rows(DO, b * T * NH * V + h * V, rows, NH * V, cv, T, V)
    h_off = ck[:, None] * V + cv[None, :]
    h_mask = (ck[:, None] < K) & (cv[None, :] < V)
    if HAS_F:
        gf_full = _rows(G0, b * s0b + h * s0h, rows, s0t, ck, T, K)
        gfn_full = _next_rows(G0, b * s0b + h * s0h, rows, s0t, ck, T, K, c * BT, c * BT + BT, False)
        at = ((bh * NT + c).to(tl.int64)) * (K * V) + h_off
        hf = tl.load(Hs + at, mask=h_mask, other=0.0).to(dt)
        dhf = tl.load(DHs + at, mask=h_mask, other=0.0).to(dt)
        dtot_f = tl.zeros([BK], dtype=tl.float32)
    if HAS_B:
        dl_b = DL
        if HAS_F:   # the reverse direction's dL follows the causal one's
            dl_b += (BH // NH).to(tl.int64) * T * NH * K
        gb_full = _rows(G1, b * s1b + h * s1h, rows, s1t, ck, T, K)
        gbn_full = _next_rows(G1, b * s1b + h * s1h, rows, s1t, ck, T, K, c * BT, c * BT + BT, True)
        at = ((((BH if HAS_F else 0) + bh) * NT + c).to(tl.int64)) * (K * V) + h_off
        hb = tl.load(Hs + at, mask=h_mask, other=0.0).to(dt)
        dhb = tl.load(DHs + at, mask=h_mask, other=0.0).to(dt)
        dtot_b = tl.zeros([BK], dtype=tl.float32)
    fast = True
    if HAS_F:
        fast = fast & (tl.min(tl.sum(gf_full, 0), 0) >= -FAST_LIMIT)
    if HAS_B:
        fast = fast & (tl.min(tl.sum(gb_full, 0), 0) >= -FAST_LIMIT)
    if fast:
        dq = tl.zeros([BT, BK], dtype=tl.float32)
        dk = tl.zeros([BT, BK], dtype=tl.float32)
        dv = tl.zeros([BT, BV], dtype=tl.float32)
        k_mask = (rows[:, None] < T) & (ck[None, :] < K)
        own_da = tl.sum(do_full * v_full, 1)[:, None]
        own_a = tl.sum(q_full * k_full, 1)[:, None]
        dl_off = (b * T + rows[:, None]) * (NH * K) + h * K + ck[None, :]
        if HAS_F:
            dq_d, dk_d, dv_d, kdk = _fast_grads(q_full, k_full, v_full, do_full, gf_full, hf, dhf, False, BT, dt,
                                                PRECISION)
            dtot_f += kdk
            tl.store(DL + dl_off, q_full * dq_d - k_full * dk_d, mask=k_mask)
            dq += dq_d + own_da * k_full
            dk += dk_d + own_da * q_full
            dv += dv_d + own_a * do_full
        if HAS_B:
            dq_d, dk_d, dv_d, kdk = _fast_grads(q_full, k_full, v_full, do_full, gb_full, hb, dhb, True, BT, dt,
                                                PRECISION)
            dtot_b += kdk
            tl.store(dl_b + dl_off, q_full * dq_d - k_full * dk_d, mask=k_mask)
            dq += dq_d + own_da * k_full
            dk += dk_d + own_da * q_full
            dv += dv_d + own_a * do_full
        tl.store(DQ + dl_off, (dq * scale).to(DQ.dtype.element_ty), mask=k_mask)
        tl.store(DK + dl_off, dk.to(DK.dtype.element_ty), mask=k_mask)
        tl.store(DV + (b * T + rows[:, None]) * (NH * V) + h * V + cv[None, :], dv.to(DV.dtype.element_ty),
                 mask=(rows[:, None] < T) & (cv[None, :] < V))
    else:
        for i in range(BT // BS):
            rows_i = c * BT + i * BS + tl.arange(0, BS)
            q_i = _rows(Q, q_base, rows_i, sqt, ck, T, K) * scale
            k_i = _rows(Kp, k_base, rows_i, skt, ck, T, K)
            v_i = _rows(Vp, v_base, rows_i, svt, cv, T, V)
            do_i = _rows(DO, b * T * NH * V + h * V, rows_i, NH * V, cv, T, V)
            dq = tl.zeros([BS, BK], dtype=tl.float32)
            dk = tl.zeros([BS, BK], dtype=tl.float32)
            dv = tl.zeros([BS, BV], dtype=tl.float32)
            k_mask = (rows_i[:, None] < T) & (ck[None, :] < K)
            # each token's own pair (no decay), once per direction: dq += (do.v) k, dk += (do.v) q, dv += (q.k) do
            own_da = tl.sum(do_i * v_i, 1)[:, None]
            own_a = tl.sum(q_i * k_i, 1)[:, None]
            dl_off = (b * T + rows_i[:, None]) * (NH * K) + h * K + ck[None, :]
            if HAS_F:
                g_i = _rows(G0, b * s0b + h * s0h, rows_i, s0t, ck, T, K)
                gn_i = _next_rows(G0, b * s0b + h * s0h, rows_i, s0t, ck, T, K, c * BT + i * BS, c * BT + i * BS + BS,
                                  False)
                dq_d, dk_d, dv_d, kdk = _direction_grads(q_i, k_i, v_i, do_i, g_i, gn_i, q_full, k_full, v_full, do_full,
                                                         gf_full, gfn_full, rloc, i, hf, dhf, False, BS, dt, PRECISION)
                dtot_f += kdk
                tl.store(DL + dl_off, q_i * dq_d - k_i * dk_d, mask=k_mask)
                dq += dq_d + own_da * k_i
                dk += dk_d + own_da * q_i
                dv += dv_d + own_a * do_i
            if HAS_B:
                g_i = _rows(G1, b * s1b + h * s1h, rows_i, s1t, ck, T, K)
                gn_i = _next_rows(G1, b * s1b + h * s1h, rows_i, s1t, ck, T, K, c * BT + i * BS, c * BT + i * BS + BS,
                                  True)
                dq_d, dk_d, dv_d, kdk = _direction_grads(q_i, k_i, v_i, do_i, g_i, gn_i, q_full, k_full, v_full, do_full,
                                                         gb_full, gbn_full, rloc, i, hb, dhb, True, BS, dt, PRECISION)
                dtot_b += kdk
                tl.store(dl_b + dl_off, q_i * dq_d - k_i * dk_d, mask=k_mask)
                dq += dq_d + own_da * k_i
                dk += dk_d + own_da * q_i
                dv += dv_d + own_a * do_i
            tl.store(DQ + dl_off, (dq * scale).to(DQ.dtype.element_ty), mask=k_mask)
            tl.store(DK + dl_off, dk.to(DK.dtype.element_ty), mask=k_mask)
            tl.store(DV + (b * T + rows_i[:, None]) * (NH * V) + h * V + cv[None, :], dv.to(DV.dtype.element_ty),
                     mask=(rows_i[:, None] < T) & (cv[None, :] < V))
    # the chunk-total decay also scales the carried state: + exp(total) * sum_v(h * dh)
    if HAS_F:
        dtot_f += tl.exp(tl.sum(gf_full, 0)) * tl.sum(hf.to(tl.float32) * dhf.to(tl.float32), 1)
        tl.store(DTOT + (bh * NT + c).to(tl.int64) * K + ck, dtot_f, mask=ck < K)
    if HAS_B:
        dtot_b += tl.exp(tl.sum(gb_full, 0)) * tl.sum(hb.to(tl.float32) * dhb.to(tl.float32), 1)
        tl.store(DTOT + (((BH if HAS_F else 0) + bh) * NT + c).to(tl.int64) * K + ck, dtot_b, mask=ck < K)


@triton.jit
def _gate_grads(DL, DTOT, DG0, DG1, T, NH, NT, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                DIR0: tl.constexpr):
    """dg of one chunk: the chunk-local sum of dL over the tokens at or after the gate in scan
    order (suffix for causal, prefix for reverse) plus the gradient of the chunk's total decay,
    which carries everything beyond the chunk (no sequence-long sums that would cancel)."""
    c = tl.program_id(0)
    bh = tl.program_id(1)
    slot = tl.program_id(2)
    b = (bh // NH).to(tl.int64)
    h = bh % NH
    out = b * T * NH * K + h * K
    if DIR0 + slot == 0:
        dg = DG0 + out
    else:
        dg = DG1 + out
    ck = tl.arange(0, BK)
    rows = c * BT + tl.arange(0, BT)
    mask = (rows[:, None] < T) & (ck[None, :] < K)
    off = rows[:, None] * (NH * K) + ck[None, :]
    x = tl.load(DL + (slot * (tl.num_programs(1) // NH) + b) * T * NH * K + h * K + off, mask=mask, other=0.0)
    run = tl.cumsum(x, 0)
    if DIR0 + slot == 0:
        run = tl.sum(x, 0)[None, :] - run + x
    tot = tl.load(DTOT + ((slot * tl.num_programs(1) + bh) * NT + c).to(tl.int64) * K + ck, mask=ck < K, other=0.0)
    tl.store(dg + off, (run + tot[None, :]).to(DG0.dtype.element_ty), mask=mask)


# One launch configuration per kernel (the autotuner's choices on the H200 for ViG's and the
# bench's head dims): compiling candidates would cost a model's first step minutes, and
# ``Launcher`` launches the compiled kernel directly (~9 us of CPU instead of ~50).
_chunk_updates_l = Launcher(_chunk_updates)
_carry_states_l = Launcher(_carry_states)   # 3 stages: the next chunks' loads are prefetched
_chunk_output_l = Launcher(_chunk_output)
_chunk_grads_l = Launcher(_chunk_grads)
_gate_grads_l = Launcher(_gate_grads)


def _grads_warps(K: int, V: int) -> int:
    return 8 if max(K, V) >= 64 else 4


def _fast_limit(dtype: torch.dtype) -> float:
    """Largest chunk-total log decay (per channel, negated) that takes the whole-chunk dots: their
    factors reach e^(limit / 2) and must stay within fp16's range times |q|, and in fp32 the
    decays come from differences of running sums up to the limit (~limit * 2^-24 absolute)."""
    return 16.0 if dtype == torch.float16 else 32.0


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _state_tiles(K: int, V: int, programs: int) -> tuple[int, int]:
    """[BK, BV] tile of the state carry: whole heads when the (batch, head, direction) programs
    already fill the GPU, else smaller tiles (down to 16) for more of them: the carry is
    sequential over the chunks, so only programs in flight hide its memory latency."""
    bk, bv = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    while programs * cdiv(K, bk) * cdiv(V, bv) < 528 and max(bk, bv) > 16:
        if bv >= bk:
            bv //= 2
        else:
            bk //= 2
    return bk, bv


def _scan_states(x, y, g0, g1, ndir, dir0, x_scale, backward):
    """The state entering each chunk, [ndir, B, H, NT, K, V] in x's dtype, in two phases: every
    chunk's own update in parallel (fp32, a temporary [ndir, B, H, NT, K, V] buffer and its decays),
    then the elementwise carry across the chunks."""
    B, T, H, K = x.shape
    V = y.shape[-1]
    NT = cdiv(T, BT)
    BH = B * H
    out = x.new_empty(ndir, B, H, NT, K, V)
    updates = torch.empty(ndir, B, H, NT, K, V, device=x.device, dtype=torch.float32)
    decays = torch.empty(ndir, B, H, NT, K, device=x.device, dtype=torch.float32)
    upcast, precision = dot_precision(x.dtype)
    bk, bv = min(64, max(16, next_power_of_2(K))), min(64, max(16, next_power_of_2(V)))
    _chunk_updates_l[(cdiv(K, bk) * cdiv(V, bv), NT, ndir * BH)](
        x, y, g0, g1, updates, decays, *_strides(x), *_strides(y), *_strides(g0), *_strides(g1), T, H, NT, BH,
        x_scale, K=K, V=V, BT=BT, BK=bk, BV=bv, DIR0=dir0, BACKWARD=backward, UPCAST=upcast, PRECISION=precision,
        num_warps=4, num_stages=1)
    bk, bv = _state_tiles(K, V, BH * ndir)
    _carry_states_l[(cdiv(K, bk) * cdiv(V, bv), BH, ndir)](
        updates, decays, out, NT, BH, K=K, V=V, BK=bk, BV=bv, DIR0=dir0, BACKWARD=backward, num_warps=4,
        num_stages=1 if interpret_mode() else 3)
    return out


def _gates(gf, gb):
    """(first gate, second gate, number of directions, first direction) for the kernels."""
    g0 = gf if gf is not None else gb
    g1 = gb if gb is not None else g0
    return g0, g1, (gf is not None) + (gb is not None), 0 if gf is not None else 1


def gla_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gf: torch.Tensor | None, gb: torch.Tensor | None,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """o [B, T, H, V] (q's dtype, contiguous) and the chunk-entry states h [ndir, B, H, NT, K, V].

    q/k/gates [B, T, H, K] and v [B, T, H, V] with unit stride on the last dim; gf is the causal
    direction's gate, gb the reverse direction's (either may be None, not both)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    g0, g1, ndir, dir0 = _gates(gf, gb)
    hs = _scan_states(k, v, g0, g1, ndir, dir0, 1.0, False)
    o = torch.empty(B, T, H, V, dtype=q.dtype, device=q.device)
    bk = max(16, next_power_of_2(K))
    bv = min(64, max(16, next_power_of_2(V)))
    upcast, precision = dot_precision(q.dtype)
    _chunk_output_l[(cdiv(V, bv), cdiv(T, BT), B * H)](
        q, k, v, g0, g1, hs, o, *_strides(q), *_strides(k), *_strides(v), *_strides(g0), *_strides(g1),
        T, H, cdiv(T, BT), scale, K=K, V=V, BT=BT, BS=BS, BK=bk, BV=bv, HAS_F=gf is not None,
        HAS_B=gb is not None, UPCAST=upcast, PRECISION=precision, FAST_LIMIT=_fast_limit(q.dtype), num_warps=4,
        num_stages=1)
    return o, hs


def gla_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gf: torch.Tensor | None,
                 gb: torch.Tensor | None, hs: torch.Tensor, scale: float) -> tuple[torch.Tensor, ...]:
    """(dq, dk, dv, dgf, dgb) of :func:`gla_forward` (dgf/dgb None where the gate is None);
    ``do`` must be contiguous [B, T, H, V]."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = cdiv(T, BT)
    g0, g1, ndir, dir0 = _gates(gf, gb)
    dhs = _scan_states(q, do, g0, g1, ndir, dir0, scale, True)
    dq = torch.empty(B, T, H, K, dtype=q.dtype, device=q.device)
    dk = torch.empty(B, T, H, K, dtype=k.dtype, device=q.device)
    dv = torch.empty(B, T, H, V, dtype=v.dtype, device=q.device)
    dl = torch.empty(ndir, B, T, H, K, dtype=torch.float32, device=q.device)
    dtot = torch.empty(ndir, B * H, NT, K, dtype=torch.float32, device=q.device)
    upcast, precision = dot_precision(q.dtype)
    _chunk_grads_l[(NT, B * H)](
        q, k, v, g0, g1, hs, dhs, do, dq, dk, dv, dl, dtot,
        *_strides(q), *_strides(k), *_strides(v), *_strides(g0), *_strides(g1),
        T, H, NT, scale, K=K, V=V, BT=BT, BS=BS, BK=max(16, next_power_of_2(K)), BV=max(16, next_power_of_2(V)),
        HAS_F=gf is not None, HAS_B=gb is not None, UPCAST=upcast, PRECISION=precision,
        FAST_LIMIT=_fast_limit(q.dtype), num_warps=_grads_warps(K, V), num_stages=1)
    dgf, dgb = (torch.empty(B, T, H, K, dtype=g0.dtype, device=q.device) if g is not None else None
                for g in (gf, gb))
    _gate_grads_l[(NT, B * H, ndir)](dl, dtot, dgf if dgf is not None else dgb, dgb if dgb is not None else dgf,
                                   T, H, NT, K=K, BT=BT, BK=max(16, next_power_of_2(K)), DIR0=dir0)
    return dq, dk, dv, dgf, dgb
