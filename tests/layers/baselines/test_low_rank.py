"""Linformer's low-rank attention: values against the PyPI `linformer` 0.2.3 (fixtures made in a
side env by tools/baseline_reference/linformer_fixtures.py) and against a float64 formula written
from the paper's equation; padding invariance, LRA's unmasked variant, gradients, linear cost and
errors."""

import math
from pathlib import Path

import pytest
import torch

from mega_lra.layers.baselines.low_rank import LowRankAttention
from mega_lra.models.linformer import LinformerBackbone
from tests.models.cost_probe import growth, largest_intermediate, training_step

FIXTURES = Path(__file__).parent / "fixtures" / "linformer"


def layer(width=8, heads=2, n=12, k=4, **kwargs):
    return LowRankAttention(width, heads, None, 0.0, n, projected_length=k, **kwargs)


def naive(attn, x, mask, masked=True):
    """y_b = W_O [softmax(Q_h (E^T K_h)^T / sqrt(d)) (F^T V_h)]_h, K/V rows of padded positions
    zeroed when `masked`; one sample and one head at a time, float64."""
    d = attn.proj.head_size
    e = attn.key_projection.double()
    f = e if attn.value_projection is None else attn.value_projection.double()
    out = []
    for b in range(x.size(0)):
        xb, length = x[b].double(), x.size(1)
        keep = mask[b].double()[:, None] if masked else torch.ones(length, 1, dtype=torch.float64)
        q = xb @ attn.proj.query.weight.double().T
        k = (xb @ attn.proj.key.weight.double().T) * keep
        v = (xb @ attn.proj.value.weight.double().T) * keep
        heads = []
        for h in range(attn.proj.num_heads):
            cols = slice(h * d, (h + 1) * d)
            k_low = e[:length].T @ k[:, cols]  # (k, d)
            v_low = f[:length].T @ v[:, cols]
            weights = torch.softmax(q[:, cols] @ k_low.T / math.sqrt(d), dim=-1)
            heads.append(weights @ v_low)
        out.append(torch.cat(heads, dim=-1) @ attn.proj.out.weight.double().T)
    return torch.stack(out)


@pytest.mark.parametrize("name", ["shared_kv", "separate_kv"])
def test_matches_linformer_package(name):
    ref = torch.load(FIXTURES / f"{name}.pt")
    attn = layer(
        ref["x"].size(-1),
        ref["num_attention_heads"],
        ref["max_length"],
        ref["projected_length"],
        share_kv=ref["share_kv"],
    ).double()
    with torch.no_grad():
        for part in ("query", "key", "value", "out"):
            getattr(attn.proj, part).weight.copy_(ref[part])
        attn.key_projection.copy_(ref["key_projection"])
        if ref["share_kv"]:
            assert torch.equal(ref["key_projection"], ref["value_projection"])
        else:
            attn.value_projection.copy_(ref["value_projection"])
    x = ref["x"]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(attn(x, mask), ref["y"], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("share_kv", [True, False])
def test_matches_naive_formula_with_padding(share_kv):
    attn = layer(share_kv=share_kv).double()
    x = torch.randn(3, 10, 8, dtype=torch.float64)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 2:] = False
    torch.testing.assert_close(attn(x, mask), naive(attn, x, mask), rtol=1e-10, atol=1e-10)


def test_lra_quirks_mix_padding_into_keys_and_values():
    attn = layer(mask_padding=False).double()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 5:] = False
    y = attn(x, mask)
    torch.testing.assert_close(y, naive(attn, x, mask, masked=False), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(y[0, :5], naive(attn, x, mask)[0, :5])


def test_padding_does_not_change_real_tokens():
    attn = layer(n=32).eval()
    x = torch.randn(2, 12, 8)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    padded_x = torch.cat([x, torch.randn(2, 9, 8)], dim=1)  # junk in the padding
    padded_mask = torch.cat([mask, torch.zeros(2, 9, dtype=torch.bool)], dim=1)
    y, y_padded = attn(x, mask), attn(padded_x, padded_mask)
    assert torch.isfinite(y_padded).all()
    torch.testing.assert_close(y_padded[:, :12][mask], y[mask], rtol=1e-6, atol=1e-6)


def test_init_is_xavier_over_positions_and_rank():
    attn = layer(n=500, k=16, share_kv=False)
    bound = math.sqrt(6.0 / (500 + 16))
    for e in (attn.key_projection, attn.value_projection):
        assert e.shape == (500, 16)
        assert e.abs().max() <= bound
        assert abs(e.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert layer(share_kv=True).value_projection is None


def test_gradcheck():
    attn = layer(width=4, n=6, k=3).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    assert torch.autograd.gradcheck(lambda t: attn(t, mask), (x,))
    params = [attn.key_projection, attn.proj.query.weight]
    assert torch.autograd.gradcheck(
        lambda e, w: torch.func.functional_call(
            attn, {"key_projection": e, "proj.query.weight": w}, (x.detach(), mask)
        ),
        tuple(p.detach().double().requires_grad_() for p in params),
    )


def test_cost_grows_linearly_in_length():
    attn = LowRankAttention(16, 2, None, 0.0, 4096, projected_length=16)
    largest_ratio, saved_ratio, (largest, op) = growth(attn, 16)
    assert largest_ratio <= 4.5, (largest_ratio, op)
    assert saved_ratio <= 4.5
    assert largest < 4096 * 4096 // 16, op  # nothing close to L x L


def test_no_length_by_length_tensor():
    attn = LowRankAttention(8, 2, None, 0.0, 512, projected_length=4)
    largest, op = largest_intermediate(training_step(attn, 512, 8))
    assert largest <= 2 * 512 * 8, op  # (B, h, L, k) / (B, L, D): never L^2 = 262144


def test_errors():
    with pytest.raises(ValueError, match="exceeds max_length 12"):
        layer()(torch.randn(1, 13, 8), torch.ones(1, 13, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_length"):
        LowRankAttention(8, 2, None, 0.0, None)
    with pytest.raises(ValueError, match="max_length"):
        LinformerBackbone(8, 1, 2, None, 8, max_length=None)
    with pytest.raises(ValueError, match="projected_length=0"):
        layer(k=0)
    with pytest.raises(ValueError, match="num_attention_heads"):
        LowRankAttention(8, 3, None, 0.0, 12)


def test_backbone_describes_itself_and_keeps_shapes():
    backbone = LinformerBackbone(
        8, 2, 2, None, 8, dropout_prob=0.0, max_length=20, projected_length=4, lra_quirks=True
    )
    info = backbone.describe()
    assert info["mixer"] == "linformer" and info["projected_length"] == 4
    assert info["lra_quirks"] and not backbone.layers[0].attention.mask_padding
    x = torch.randn(2, 20, 8)
    assert backbone(x, torch.ones(2, 20, dtype=torch.bool)).shape == (2, 20, 8)
