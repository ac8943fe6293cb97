"""Our NA reference against NATTEN's flex backend (a peer implementation) on random settings:
output and LSE, with additional keys/values in every other trial and grouped-query attention
(4 query heads on 2 key/value heads) in the last two."""
import random

import pytest
import torch

from ops.neighborhood.reference import neighborhood_attention_reference
from tests.ops.helpers import assert_close, fresh_generator, randn

natten = pytest.importorskip("natten")


def _random_setting(rng: random.Random, rank: int):
    shape = tuple(rng.randint(5, 12 if rank < 3 else 7) for _ in range(rank))
    kernel, dilation, stride, causal = [], [], [], []
    for axis, length in enumerate(shape):
        d = rng.choice([1, 1, 2]) if axis or length >= 6 else 1
        # Axis 0 keeps a window smaller than the input: with full windows everywhere NATTEN
        # hands the problem to its dense FMHA path, which has no CPU backend.
        k = rng.randint(2, length // d - (axis == 0))
        kernel.append(k)
        dilation.append(d)
        stride.append(rng.randint(1, k))
        causal.append(rng.random() < 0.3)
    return shape, tuple(kernel), tuple(dilation), tuple(stride), tuple(causal)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("trial", range(4))
def test_reference_matches_natten(rank, trial):
    gen, seed = fresh_generator()
    rng = random.Random(seed)
    shape, kernel, dilation, stride, causal = _random_setting(rng, rank)
    heads, kv_heads = (4, 2) if trial >= 2 else (2, 2)
    q = randn(1, *shape, heads, 8, dtype=torch.float32, device="cpu", gen=gen)
    k, v = (randn(1, *shape, kv_heads, 8, dtype=torch.float32, device="cpu", gen=gen) for _ in range(2))
    ek = ev = None
    if trial % 2:   # extra tokens every query attends, in the same softmax
        n_extra = rng.randint(1, 6)
        ek, ev = (randn(1, n_extra, kv_heads, 8, dtype=torch.float32, device="cpu", gen=gen) for _ in range(2))
    fn = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}[rank]
    theirs, their_lse = fn(q, k, v, kernel_size=kernel, stride=stride, dilation=dilation, is_causal=causal,
                           additional_keys=ek, additional_values=ev, backend="flex-fna", torch_compile=False,
                           return_lse=True)
    ours, our_lse = neighborhood_attention_reference(
        q.double(), k.double(), v.double(), kernel, dilation, stride, causal, 8 ** -0.5,
        None if ek is None else ek.double(), None if ev is None else ev.double())
    what = f"heads={heads}/{kv_heads} shape={shape} k={kernel} d={dilation} s={stride} c={causal} extra={None if ek is None else ek.shape[1]}"
    assert_close(theirs, ours, torch.float32, f"natten vs reference output {what}", seed)
    assert_close(their_lse, our_lse, torch.float32, f"natten vs reference lse {what}", seed)

