"""Linear attention (mega_lra/layers/baselines/linear.py) against the naive O(L^2) formula in
float64: A_ij = phi(q_i) . phi(k_j), y_i = sum_j A_ij v_j / (sum_j A_ij + 1e-6), phi = elu + 1,
padded keys out of both sums (all keys in, under `lra_quirks`)."""

from __future__ import annotations

import pytest
import torch

from mega_lra.layers.baselines.linear import LinearAttention
from tests.models.cost_probe import growth

D, HEADS, QKV = 8, 2, 12


def make(lra_quirks: bool = False, qkv_size: int | None = QKV) -> LinearAttention:
    torch.manual_seed(0)
    return LinearAttention(D, HEADS, qkv_size, 0.1, None, lra_quirks=lra_quirks).double().eval()


def inputs(batch: int = 2, length: int = 7, real: tuple[int, ...] = (7, 4)):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, length, D, generator=gen, dtype=torch.float64)
    mask = torch.arange(length)[None, :] < torch.tensor(real)[:, None]
    return x, mask


def naive(attn: LinearAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The explicit O(L^2) sum, one (batch, head) at a time, float64."""
    p = attn.proj
    q, k, v = x @ p.query.weight.T, x @ p.key.weight.T, x @ p.value.weight.T  # (B, L, hd)
    d = p.head_size

    def phi(t):
        return torch.where(t > 0, t + 1, torch.exp(t))  # elu(t) + 1

    out = torch.zeros_like(q)
    for b in range(x.size(0)):
        for h in range(p.num_heads):
            cols = slice(h * d, (h + 1) * d)
            a = phi(q[b, :, cols]) @ phi(k[b, :, cols]).T  # (L, L)
            a = a * mask[b][None, :].to(a.dtype)
            out[b, :, cols] = (a @ v[b, :, cols]) / (a.sum(dim=1, keepdim=True) + 1e-6)
    return out @ p.out.weight.T


def test_matches_naive_quadratic_formula():
    attn = make()
    x, mask = inputs()
    y = attn(x, mask)
    ref = naive(attn, x, mask)
    real = mask[..., None]
    torch.testing.assert_close(y * real, ref * real, rtol=1e-10, atol=1e-12)


def test_lra_quirks_keep_padded_keys_as_lra_does():
    attn = make(lra_quirks=True)
    x, mask = inputs()
    y = attn(x, mask)
    torch.testing.assert_close(y, naive(attn, x, torch.ones_like(mask)), rtol=1e-10, atol=1e-12)
    x2 = x.clone()
    x2[1, 4:] += 1.0  # change only padded positions of row 1
    assert not torch.allclose(attn(x2, mask)[1, :4], y[1, :4])


def test_padding_does_not_change_real_tokens():
    attn = make()
    x, mask = inputs(length=7, real=(7, 4))
    y = attn(x, mask)
    extra = torch.randn(2, 5, D, dtype=torch.float64) * 3
    x_long = torch.cat([x, extra], dim=1)
    mask_long = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    y_long = attn(x_long, mask_long)
    torch.testing.assert_close(y_long[0, :7], y[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(y_long[1, :4], y[1, :4], rtol=0, atol=1e-10)
    assert torch.isfinite(y_long).all()


def test_all_padding_row_is_finite():
    attn = make()
    x, _ = inputs()
    mask = torch.zeros(2, 7, dtype=torch.bool)
    assert torch.isfinite(attn(x, mask)).all()


def test_gradcheck_float64():
    attn = make()
    x, mask = inputs(batch=1, length=5, real=(4,))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: attn(t, mask), (x,))
    names = ("proj.query.weight", "proj.key.weight", "proj.value.weight")
    weights = tuple(attn.get_parameter(n).detach().clone().requires_grad_(True) for n in names)

    def f(*ws):
        return torch.func.functional_call(attn, dict(zip(names, ws)), (x.detach(), mask))

    assert torch.autograd.gradcheck(f, weights)


def test_autocast_runs_the_sums_in_float32():
    torch.manual_seed(0)
    attn = LinearAttention(D, HEADS, QKV, 0.0).eval()
    x, mask = inputs()
    x = x.float()
    ref = attn(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x, mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=5e-2)


def test_cost_grows_linearly_in_length():
    torch.manual_seed(0)
    attn = LinearAttention(D, HEADS, None, 0.0)
    largest, saved, (numel, op) = growth(attn, D)
    assert largest <= 4.5, (largest, op)
    assert saved <= 4.5
    assert numel < 4096 * 4096


def test_bad_head_split_raises():
    with pytest.raises(ValueError, match="qkv_size=10"):
        LinearAttention(D, 4, 10, 0.0)


def test_backbone_builds_and_describes():
    from mega_lra.models.linear_transformer import LinearTransformerBackbone

    backbone = LinearTransformerBackbone(8, 2, 2, None, 8, lra_quirks=True)
    info = backbone.describe()
    assert info["mixer"] == "linear_attention" and info["lra_quirks"] is True
    assert info["num_hidden_layers"] == 2
    x, mask = inputs()
    assert backbone(x.float(), mask).shape == x.shape
