"""Longformer's sliding window against a dense float64 masked softmax whose band is rebuilt here
the way LRA builds it (a sum of shifted identities), plus padding invariance, gradients and cost
(banded blocks, never L x L, also at LRA's window of 512)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mega_lra.layers.baselines.sliding_window import SlidingWindowAttention
from tests.models.cost_probe import growth, largest_intermediate, training_step

D, H = 12, 3


def lra_band(length: int, window: int) -> torch.Tensor:
    """LRA's `_build_sliding_window_mask`: eye(k=-i) for i < w - w//2 (left, the query itself
    included) plus eye(k=i) for 1 <= i <= w//2 (right)."""
    right = window // 2
    left = window - right
    band = sum(np.eye(length, k=-i) for i in range(left))
    band = band + sum(np.eye(length, k=i) for i in range(1, right + 1))
    return torch.from_numpy(band > 0)


def dense(layer: SlidingWindowAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """W_O softmax_allowed(Q K^T / sqrt(d)) V over all L x L pairs, float64."""
    p = layer.proj
    q, k, v = (
        (x @ w.weight.T).view(x.size(0), -1, H, D // H).transpose(1, 2)
        for w in (p.query, p.key, p.value)
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)  # (B, h, L, L)
    weights = scores.masked_fill(~allowed[:, None], -math.inf).softmax(-1)
    return p.out((weights @ v).transpose(1, 2).reshape(x.size(0), x.size(1), D))


@pytest.mark.parametrize(
    ("length", "window", "chunk"),
    [
        (37, 8, 16),
        (37, 7, 5),
        (37, 8, 37),
        (20, 64, None),
        (19, 2, 3),
        (21, 1, 4),
        (600, 512, None),
    ],
)
def test_window_matches_a_dense_banded_reference(length, window, chunk):
    torch.manual_seed(0)
    layer = SlidingWindowAttention(D, H, None, 0.0, window_size=window, query_chunk=chunk)
    layer = layer.double().eval()
    x = torch.randn(2, length, D, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length - length // 3 :] = False
    allowed = lra_band(length, window)[None] & mask[:, None, :]
    got = layer(x, mask)
    torch.testing.assert_close(got[mask], dense(layer, x, allowed)[mask], rtol=1e-10, atol=1e-10)
    assert torch.isfinite(got).all()


def test_lra_window_of_512_is_256_left_with_the_query_and_256_right():
    band = lra_band(1200, 512)[600]
    seen = band.nonzero().flatten()
    assert (seen.min().item(), seen.max().item(), len(seen)) == (600 - 255, 600 + 256, 512)
    torch.manual_seed(1)
    layer = SlidingWindowAttention(D, H, None, 0.0, window_size=512).eval()
    x = torch.randn(1, 1200, D)
    mask = torch.ones(1, 1200, dtype=torch.bool)
    for key, inside in [(345, True), (344, False), (856, True), (857, False)]:
        moved = x.clone()
        moved[0, key] += 1.0
        changed = (layer(moved, mask) - layer(x, mask))[0, 600].abs().max() > 1e-6
        assert bool(changed) == inside, key


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(2)
    layer = SlidingWindowAttention(D, H, None, 0.0, window_size=6, query_chunk=4).eval()
    x = torch.randn(2, 13, D)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, 10:] = False
    longer = torch.cat([x, 100 * torch.randn(2, 9, D)], 1)
    longer[0, 10:13] = 100.0
    longer_mask = torch.cat([mask, torch.zeros(2, 9, dtype=torch.bool)], 1)
    torch.testing.assert_close(
        layer(longer, longer_mask)[:, :13][mask], layer(x, mask)[mask], rtol=1e-6, atol=1e-6
    )


def test_gradients_match_finite_differences():
    torch.manual_seed(3)
    layer = SlidingWindowAttention(6, 2, None, 0.0, window_size=4, query_chunk=3).double()
    x = torch.randn(1, 8, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 7 + [False]])
    assert torch.autograd.gradcheck(lambda t: layer(t, mask), (x,))


def test_cost_grows_linearly():
    layer = SlidingWindowAttention(8, 2, None, 0.0, window_size=64)
    largest, saved, (numel, op) = growth(layer, 8)
    assert largest <= 4.5 and saved <= 4.5, (largest, saved, op)
    assert numel < 4096 * 4096 // 16


def test_lra_window_of_512_never_builds_l_by_l():
    layer = SlidingWindowAttention(8, 2, None, 0.0, window_size=512)
    numel, op = largest_intermediate(training_step(layer, 4096, 8))
    assert numel < 4096 * 4096 // 2, op  # 2 heads x 4096 x (128 + 511) band scores


def test_bad_fields_raise():
    with pytest.raises(ValueError, match="window_size"):
        SlidingWindowAttention(D, H, None, 0.0, window_size=0)
    with pytest.raises(ValueError, match="query_chunk"):
        SlidingWindowAttention(D, H, None, 0.0, query_chunk=0)
    with pytest.raises(ValueError, match="num_attention_heads"):
        SlidingWindowAttention(D, 5, None, 0.0)
