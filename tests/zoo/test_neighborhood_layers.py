"""zoo.layers NeighborhoodAttention1D/2D/3D: shapes, equality with the op, torch.compile."""
import pytest
import torch

from ops.neighborhood.reference import neighborhood_attention_reference
from tests.ops.helpers import assert_close, fresh_generator
from zoo.layers import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D


@pytest.fixture
def reference_path(monkeypatch):
    """Run the op on its plain-PyTorch path (CPU without the interpreter, as users on CPU do)."""
    monkeypatch.setenv("FOVEAL_FORCE_REFERENCE", "1")


@pytest.mark.parametrize("cls, shape, kw", [
    (NeighborhoodAttention1D, (12,), dict(kernel_size=5, is_causal=True)),
    (NeighborhoodAttention2D, (6, 7), dict(kernel_size=3, dilation=(2, 1), stride=(1, 2))),
    (NeighborhoodAttention3D, (3, 4, 5), dict(kernel_size=(2, 3, 3))),
])
def test_layer_matches_reference(cls, shape, kw, reference_path):
    gen, seed = fresh_generator()
    torch.manual_seed(seed)
    layer = cls(32, 2, **kw).double()
    x = torch.randn(2, *shape, 32, dtype=torch.float64, generator=gen)
    y = layer(x)
    q, k, v = layer.qkv(x).unflatten(-1, (3, 2, 16)).unbind(-3)
    rank = len(shape)
    as_t = lambda a, f: tuple(a) if isinstance(a, tuple) else (f(a),) * rank  # noqa: E731
    o, _ = neighborhood_attention_reference(q, k, v, as_t(kw["kernel_size"], int), as_t(kw.get("dilation", 1), int),
                                            as_t(kw.get("stride", 1), int), as_t(kw.get("is_causal", False), bool),
                                            16 ** -0.5)
    assert_close(y, layer.proj(o.flatten(-2)), torch.float64, f"{cls.__name__} output", seed)


def test_layer_rejects_bad_sizes():
    for dim, heads in ((32, 0), (32, 4.0), (0, 1), (True, 1)):
        with pytest.raises(ValueError, match="must be a positive int"):
            NeighborhoodAttention2D(dim, heads, 3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        NeighborhoodAttention2D(30, 4, 3)


def test_layer_rejects_wrong_rank_or_channels():
    with pytest.raises(ValueError, match=r"NeighborhoodAttention2D expects \[batch, 2 spatial axes, 16 channels\]"):
        NeighborhoodAttention2D(16, 2, 3)(torch.randn(1, 8, 16))
    with pytest.raises(ValueError, match=r"16 channels\], got shape \(1, 8, 8, 32\)"):
        NeighborhoodAttention2D(16, 2, 3)(torch.randn(1, 8, 8, 32))


def test_torch_compile_fullgraph(reference_path):
    """A model using NeighborhoodAttention2D compiles with fullgraph=True (no graph break) and
    its compiled forward and backward match eager."""
    torch._dynamo.reset()
    gen, seed = fresh_generator()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.LayerNorm(32), NeighborhoodAttention2D(32, 2, kernel_size=3, stride=(1, 2)),
                                torch.nn.GELU())
    x = torch.randn(2, 6, 7, 32, generator=gen, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    gx = x.grad.clone()
    x.grad = None
    y_eager = model(x)
    y_eager.sum().backward()
    assert_close(y, y_eager.detach().double(), torch.float32, "compiled output", seed)
    assert_close(gx, x.grad.double(), torch.float32, "compiled input grad", seed)
