"""Performer attention (mega_lra/layers/baselines/favor.py) against explicit float64 sums:
the ReLU kernel as A_ij = phi(q_i) . phi(k_j) with phi = ReLU + 1e-3; FAVOR+ with an injected W
as A_ij = sum_r phi_r(q_i) phi_r(k_j) over the random features; FAVOR+ with m = 4096 against
exact softmax attention (the estimator's purpose); and outputs of the PyPI `performer-pytorch`
1.1.4 (fixtures/performer/, made by tools/baseline_reference/performer_fixtures.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mega_lra.layers.baselines.favor import FavorAttention, gaussian_orthogonal_matrix
from tests.models.cost_probe import growth

D, HEADS, QKV = 8, 2, 12  # head size d = 6
FIXTURES = Path(__file__).parent / "fixtures" / "performer"


def make(kernel: str = "relu", m: int = 16, **fields) -> FavorAttention:
    torch.manual_seed(0)
    attn = FavorAttention(D, HEADS, QKV, 0.1, None, kernel=kernel, num_random_features=m, **fields)
    return attn.double().eval()


def inputs(batch: int = 2, length: int = 7, real: tuple[int, ...] = (7, 4), scale: float = 1.0):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, length, D, generator=gen, dtype=torch.float64) * scale
    mask = torch.arange(length)[None, :] < torch.tensor(real)[:, None]
    return x, mask


def heads(attn: FavorAttention, x: torch.Tensor):
    """Per-head q, k, v as lists [(B, L, d)] from the weights, independently of the module."""
    p = attn.proj
    d = p.head_size
    q, k, v = x @ p.query.weight.T, x @ p.key.weight.T, x @ p.value.weight.T
    return [
        (q[..., h * d : (h + 1) * d], k[..., h * d : (h + 1) * d], v[..., h * d : (h + 1) * d])
        for h in range(p.num_heads)
    ]


def explicit(attn: FavorAttention, x, mask, scores) -> torch.Tensor:
    """y_i = sum_j A_ij v_j / R_i, R_i = sum_j A_ij (+ 2e-6 where |R_i| <= 1e-6), padded keys out;
    `scores(q, k, keep)` gives A (L, L) for one row and head."""
    outs = []
    for q, k, v in heads(attn, x):
        per_row = []
        for b in range(x.size(0)):
            a = scores(q[b], k[b], mask[b]) * mask[b][None, :].to(x.dtype)  # (L, L)
            r = a.sum(dim=1, keepdim=True)
            r = r + 2e-6 * (r.abs() <= 1e-6).to(r.dtype)
            per_row.append(a @ v[b] / r)
        outs.append(torch.stack(per_row))
    return torch.cat(outs, dim=-1) @ attn.proj.out.weight.T


def relu_scores(q, k, keep):
    return (torch.relu(q) + 1e-3) @ (torch.relu(k) + 1e-3).T


def favor_scores(w):
    """A_ij = sum_r phi_r(q_i) phi_r(k_j), phi_r(x) = m^-1/2 (exp(w_r.x^ - |x^|^2/2 - c) + 1e-6)."""
    m, d = w.shape

    def scores(q, k, keep):
        a = torch.zeros(q.size(0), k.size(0), dtype=q.dtype)
        qh, kh = q / d**0.25, k / d**0.25
        c_q = (qh @ w.T).max(dim=1, keepdim=True).values  # per query, over features
        c_k = (kh[keep] @ w.T).max()  # over features and real keys
        for r in range(m):
            fq = (torch.exp(qh @ w[r] - (qh * qh).sum(1) / 2 - c_q[:, 0]) + 1e-6) / math.sqrt(m)
            fk = (torch.exp(kh @ w[r] - (kh * kh).sum(1) / 2 - c_k) + 1e-6) / math.sqrt(m)
            a += fq[:, None] * fk[None, :]
        return a

    return scores


def exact_softmax_scores(q, k, keep):
    return torch.exp(q @ k.T / math.sqrt(q.size(1)))


def real_rows(y, mask):
    return y * mask[..., None]


def test_relu_kernel_matches_explicit_sum():
    attn = make("relu")
    x, mask = inputs()
    ref = explicit(attn, x, mask, relu_scores)
    torch.testing.assert_close(
        real_rows(attn(x, mask), mask), real_rows(ref, mask), rtol=1e-10, atol=1e-12
    )


def test_favor_with_injected_w_matches_explicit_feature_sum():
    attn = make("softmax", m=10)
    attn.redraw(torch.Generator().manual_seed(5))
    x, mask = inputs()
    ref = explicit(attn, x, mask, favor_scores(attn.projection))
    torch.testing.assert_close(
        real_rows(attn(x, mask), mask), real_rows(ref, mask), rtol=1e-10, atol=1e-12
    )


def test_favor_with_many_features_approximates_softmax_attention():
    attn = make("softmax", m=4096)
    attn.redraw(torch.Generator().manual_seed(3))
    # |q|, |k| <= ~1.5: the estimator's variance grows as exp(|q^ + k^|^2) / m
    x, mask = inputs(length=16, real=(16, 11), scale=0.25)
    ref = explicit(attn, x, mask, exact_softmax_scores)
    err = (real_rows(attn(x, mask), mask) - real_rows(ref, mask)).abs().max()
    assert err < 1e-2, err
    few = make("softmax", m=2)  # LRA's ListOps setting: far from softmax
    few.load_state_dict({**attn.state_dict(), "projection": attn.projection[:2]})
    assert (real_rows(few(x, mask), mask) - real_rows(ref, mask)).abs().max() > err


@pytest.mark.parametrize("kernel", ["relu", "softmax"])
def test_matches_performer_pytorch(kernel):
    ref = torch.load(FIXTURES / f"{kernel}.pt", weights_only=True)
    attn = (
        FavorAttention(
            ref["hidden_size"],
            ref["num_attention_heads"],
            ref["qkv_size"],
            0.0,
            kernel=kernel,
            num_random_features=max(ref["num_random_features"], 1),
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        for name in ("query", "key", "value", "out"):
            getattr(attn.proj, name).weight.copy_(ref[name])
        if kernel == "softmax":
            attn.projection.copy_(ref["projection"])
    x = ref["x"]
    y = attn(x, torch.ones(x.shape[:2], dtype=torch.bool))
    torch.testing.assert_close(y, ref["y"], rtol=1e-10, atol=1e-12)


def test_gaussian_orthogonal_blocks():
    w = gaussian_orthogonal_matrix(14, 6, torch.Generator().manual_seed(0))
    assert w.shape == (14, 6)
    unit = w / w.norm(dim=1, keepdim=True)
    for block in (unit[0:6], unit[6:12]):
        torch.testing.assert_close(block @ block.T, torch.eye(6, dtype=w.dtype))
    big = gaussian_orthogonal_matrix(1200, 6, torch.Generator().manual_seed(0))
    assert abs(big.square().sum(1).mean().item() - 6) < 0.5  # E|w|^2 = d (Gaussian row norms)


@pytest.mark.parametrize("kernel", ["relu", "softmax"])
def test_padding_does_not_change_real_tokens(kernel):
    attn = make(kernel)
    x, mask = inputs()
    y = attn(x, mask)
    extra = torch.randn(2, 5, D, dtype=torch.float64) * 10  # large: would dominate the max
    y_long = attn(
        torch.cat([x, extra], dim=1),
        torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1),
    )
    torch.testing.assert_close(y_long[0, :7], y[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(y_long[1, :4], y[1, :4], rtol=0, atol=1e-10)
    assert torch.isfinite(y_long).all()


@pytest.mark.parametrize("kernel", ["relu", "softmax"])
def test_all_padding_row_is_finite(kernel):
    attn = make(kernel)
    x, _ = inputs()
    assert torch.isfinite(attn(x, torch.zeros(2, 7, dtype=torch.bool))).all()


def test_lra_quirks_relu_leaves_padding_unmasked():
    attn = make("relu", lra_quirks=True)
    x, mask = inputs()
    y = attn(x, mask)
    ref = explicit(attn, x, torch.ones_like(mask), relu_scores)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    x2 = x.clone()
    x2[1, 4:] += 1.0
    assert not torch.allclose(attn(x2, mask)[1, :4], y[1, :4])


def test_lra_quirks_softmax_redraws_every_call_seeded_by_the_queries():
    attn = make("softmax", m=8, lra_quirks=True)
    stored = attn.projection.clone()
    x, mask = inputs()
    y = attn(x, mask)
    torch.testing.assert_close(attn(x, mask), y)  # same data, same seed, same W
    q = x @ attn.proj.query.weight.T
    seed = math.ceil(float(q.detach().float().sum()) * 1e7) % 2**63
    w = gaussian_orthogonal_matrix(8, 6, torch.Generator().manual_seed(seed))
    ref = explicit(attn, x, torch.ones_like(mask), favor_scores(w))
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)  # no padding mask either
    attn.train()
    torch.testing.assert_close(attn(x, mask), y)  # no dropout; per-call draw in training too
    torch.testing.assert_close(attn.projection, stored)  # the buffer is not used


def test_training_redraws_every_interval_and_evaluation_never():
    attn = make("softmax", m=8, feature_redraw_interval=3)
    x, mask = inputs()
    w0 = attn.projection.clone()
    for _ in range(5):
        attn(x, mask)  # eval: fixed W
    torch.testing.assert_close(attn.projection, w0)
    attn.train()
    for _ in range(3):
        attn(x, mask)
    torch.testing.assert_close(attn.projection, w0)
    attn(x, mask)  # the 4th training call redraws first
    w1 = attn.projection.clone()
    assert not torch.allclose(w1, w0)
    attn.eval()
    y = attn(x, mask)
    torch.testing.assert_close(attn(x, mask), y)
    restored = make("softmax", m=8, feature_redraw_interval=3)
    restored.load_state_dict(attn.state_dict())
    torch.testing.assert_close(restored(x, mask), y)  # checkpoints keep W


def test_interval_zero_never_redraws():
    attn = make("softmax", m=8, feature_redraw_interval=0).train()
    w0 = attn.projection.clone()
    x, mask = inputs()
    for _ in range(4):
        attn(x, mask)
    torch.testing.assert_close(attn.projection, w0)


@pytest.mark.parametrize("kernel", ["relu", "softmax"])
def test_gradcheck_float64(kernel):
    attn = make(kernel, m=4)
    x, mask = inputs(batch=1, length=5, real=(4,))
    assert torch.autograd.gradcheck(lambda t: attn(t, mask), (x.requires_grad_(True),))
    names = ("proj.query.weight", "proj.key.weight")
    weights = tuple(attn.get_parameter(n).detach().clone().requires_grad_(True) for n in names)

    def f(*ws):
        return torch.func.functional_call(attn, dict(zip(names, ws)), (x.detach(), mask))

    assert torch.autograd.gradcheck(f, weights)


def test_autocast_keeps_features_in_float32():
    torch.manual_seed(0)
    attn = FavorAttention(D, HEADS, QKV, 0.0, kernel="softmax", num_random_features=16).eval()
    x, mask = inputs(scale=4.0)
    x = x.float()
    ref = attn(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x, mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=1e-1)


@pytest.mark.parametrize("kernel", ["relu", "softmax"])
def test_cost_grows_linearly_in_length(kernel):
    torch.manual_seed(0)
    attn = FavorAttention(D, HEADS, None, 0.0, kernel=kernel, num_random_features=16)
    largest, saved, (numel, op) = growth(attn, D)
    assert largest <= 4.5, (largest, op)
    assert saved <= 4.5
    assert numel < 4096 * 4096


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kernel": "gaussian"}, "model.kernel='gaussian'"),
        ({"num_random_features": 0}, "num_random_features=0"),
        ({"feature_redraw_interval": -1}, "feature_redraw_interval=-1"),
    ],
)
def test_bad_fields_raise(fields, match):
    with pytest.raises(ValueError, match=match):
        FavorAttention(D, HEADS, QKV, 0.0, **fields)


def test_bad_head_split_raises():
    with pytest.raises(ValueError, match="qkv_size=10"):
        FavorAttention(D, 4, 10, 0.0)


def test_backbone_builds_describes_and_rejects_bad_kernel():
    from mega_lra.models.performer import PerformerBackbone

    backbone = PerformerBackbone(8, 2, 2, None, 8, kernel="softmax", num_random_features=2)
    info = backbone.describe()
    assert info["mixer"] == "performer" and info["kernel"] == "softmax"
    assert info["num_random_features"] == 2 and info["lra_quirks"] is False
    x, mask = inputs()
    assert backbone(x.float(), mask).shape == x.shape
    with pytest.raises(ValueError, match="model.kernel='exp'"):
        PerformerBackbone(8, 1, 2, kernel="exp")
