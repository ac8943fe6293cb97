"""The ``na`` bench suite: its FlexAttention peer's tiled mask is NATTEN's mask, and it runs on CPU."""
import math

import pytest
import torch

from ops.neighborhood.reference import neighborhood_mask
from tasks.bench import run_suite
from tasks.bench.suites import na


@pytest.mark.parametrize("shape, kernel, stride, tile", [
    ((8, 12), (5, 4), (1, 1), (4, 4)),
    ((8, 16), (4, 8), (2, 8), (4, 8)),
    ((4, 8, 8), (3, 4, 4), (2, 2, 4), (2, 4, 4)),
])
def test_tiled_mask_mod_equals_reference_mask(shape, kernel, stride, tile):
    n = math.prod(shape)
    idx = torch.arange(n)
    theirs = na.tiled_mask_mod(shape, kernel, stride, tile)(0, 0, idx[:, None], idx[None, :])
    # tiled position p holds row-major token order[p]
    order = na.to_tiled(torch.arange(n).reshape(1, *shape, 1, 1), tile).flatten()
    ours = neighborhood_mask(shape, kernel, (1,) * len(shape), stride, (False,) * len(shape))
    assert torch.equal(theirs, ours[order][:, order])


def test_na_suite_runs_on_cpu(monkeypatch):
    monkeypatch.setattr(na, "CPU_CASES", [("GNA-2D mini", (1, 1, 16), (4, 6), (3, 3), (1, 2), (2, 2))])
    record = run_suite("na", "cpu", torch.float32, warmup_ms=0, rep_ms=1)
    foveal = [r for r in record["results"] if r["impl"] == "foveal"]
    assert {r["direction"] for r in foveal} == {"forward", "forward+backward"}
    assert all(r["median_ms"] > 0 and r["tflops"] > 0 and 0 < r["fraction_of_bound"] for r in foveal)
    assert any(r["impl"].startswith("sdpa") and r["median_ms"] for r in record["results"])
