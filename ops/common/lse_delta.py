"""The attention backwards' per-query (log2 LSE, delta) pairs, shared by NA and the block-sparse core.

Their dQ kernels compute ``delta = rowsum(dO * O)`` (minus dLSE) on the way and store it next to the
log2-scaled LSE, one 8-byte pair per query, in a float32 buffer laid out like the (contiguous) LSE
with a trailing pair axis; their dK/dV kernels load both with one vector access per query. Two
strided 4-byte loads, each with its own address and predicate math, cost up to a quarter of a
dK/dV step's instructions on sm_90 (NA's 2-D backbone case: 675 -> 494 SASS per step).
"""
import triton
import triton.language as tl


@triton.jit
def store_lse_delta(LD, l_off, lse2, delta, mask):
    """Store each row's (lse2, delta) at ``LD + 2 * l_off`` (``l_off``: its offset in the LSE)."""
    pair = 2 * l_off[:, None] + tl.arange(0, 2)[None, :]
    tl.store(LD + pair, tl.join(lse2, delta), mask=mask[:, None])


@triton.jit
def load_lse_delta(LD, l_off, mask):
    """(lse2, delta) of each row, as :func:`store_lse_delta` wrote them (0 where ``mask`` is off)."""
    pair = tl.load(LD + 2 * l_off[:, None] + tl.arange(0, 2)[None, :], mask=mask[:, None], other=0.0)
    return tl.split(pair)
