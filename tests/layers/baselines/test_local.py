"""Local attention against a dense float64 masked softmax whose pattern is rebuilt here from the
definitions (contiguous blocks; LRA's strided groups and misaligned mask), plus padding
invariance, gradients and cost."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mega_lra.layers.baselines.local import LocalAttention
from tests.models.cost_probe import growth, largest_intermediate, training_step

D, H = 12, 3
FIXTURES = Path(__file__).parent / "fixtures" / "local"


def dense(
    layer: LocalAttention, x: torch.Tensor, allowed: torch.Tensor, flat: torch.Tensor | None = None
) -> torch.Tensor:
    """y = W_O softmax_allowed(Q K^T / sqrt(d)) V over all L x L pairs, float64; rows marked in
    `flat` (B, L) get uniform weights over their allowed keys (LRA's -1e10 bias swamping the
    float32 logits of a row with nothing allowed)."""
    p = layer.proj
    q, k, v = (
        (x @ w.weight.T).view(x.size(0), -1, H, D // H).transpose(1, 2)
        for w in (p.query, p.key, p.value)
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)  # (B, h, L, L)
    if flat is not None:
        scores = scores.masked_fill(flat[:, None, :, None], 0.0)
    weights = scores.masked_fill(~allowed[:, None], -math.inf).softmax(-1)
    y = (weights @ v).transpose(1, 2).reshape(x.size(0), x.size(1), D)
    return p.out(y)


def block_pattern(mask: torch.Tensor, w: int) -> torch.Tensor:
    """allowed[b, i, j]: j in i's block of w and real."""
    pos = torch.arange(mask.size(1))
    same = pos[:, None] // w == pos[None, :] // w
    return same[None] & mask[:, None, :]


def test_block_diagonal_attention_matches_a_dense_masked_softmax():
    torch.manual_seed(0)
    layer = LocalAttention(D, H, None, 0.0, window_size=8).double().eval()
    x = torch.randn(2, 37, D, dtype=torch.float64)
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 29:] = False  # row 1: a partly padded block and a wholly padded one
    got = layer(x, mask)
    want = dense(layer, x, block_pattern(mask, 8))
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-10, atol=1e-10)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("case", ["w5_l23", "w8_l32"])
def test_block_diagonal_attention_matches_the_local_attention_package(case):
    """local-attention 1.11.2 with look_backward = look_forward = 0 and no rotary
    (tools/baseline_reference/local_fixtures.py)."""
    ref = torch.load(FIXTURES / f"{case}.pt")
    dim = ref["x"].size(-1)
    layer = LocalAttention(
        dim, ref["num_attention_heads"], None, 0.0, window_size=ref["window_size"]
    )
    layer = layer.double().eval()
    with torch.no_grad():
        for name, linear in zip(
            "qkvo", (layer.proj.query, layer.proj.key, layer.proj.value, layer.proj.out)
        ):
            linear.weight.copy_(ref[f"w_{name}"])
    mask = ref["mask"]
    got = layer(ref["x"], mask)
    torch.testing.assert_close(got[mask], ref["y"][mask], rtol=1e-10, atol=1e-10)


def lra_strided_pattern(mask: torch.Tensor, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LRA as coded, from its definition: the length padded by w - L mod w tokens (counted as
    real) to n w; token t = s n + g is member s of group g; t attends to t' = s' n + g iff
    m[g w + s] and m[g w + s']; a row with nothing allowed is uniform over its group.
    Returns (allowed, rows with nothing allowed before the fallback), over the padded length."""
    b, length = mask.shape
    padded = length + w - length % w
    n = padded // w
    m = torch.cat([mask, torch.ones(b, padded - length, dtype=torch.bool)], 1)
    t = torch.arange(padded)
    group, member = t % n, t // n
    same = group[:, None] == group[None, :]
    chunk = m[:, group * w + member]  # m[g w + s] for each token, (B, L')
    allowed = same[None] & chunk[:, :, None] & chunk[:, None, :]
    empty = ~allowed.any(-1)
    return allowed | (empty[:, :, None] & same[None]), empty


def test_lra_quirks_match_the_strided_groups_and_misaligned_mask():
    torch.manual_seed(1)
    w, length = 4, 22
    layer = LocalAttention(D, H, None, 0.0, window_size=w, lra_quirks=True).double().eval()
    x = torch.randn(2, length, D, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 15:] = False
    allowed, flat = lra_strided_pattern(mask, w)
    assert flat.any()  # the test covers rows that LRA's mask leaves with nothing
    padded_x = torch.cat([x, x.new_zeros(2, allowed.size(1) - length, D)], 1)
    want = dense(layer, padded_x, allowed, flat)[:, :length]
    torch.testing.assert_close(layer(x, mask), want, rtol=1e-10, atol=1e-10)


def test_lra_quirks_groups_are_strided_not_contiguous():
    """L = 11, w = 4: one padding token to 12, n = 3 groups {0,3,6,9}, {1,4,7,10}, {2,5,8,11}."""
    torch.manual_seed(2)
    layer = LocalAttention(D, H, None, 0.0, window_size=4, lra_quirks=True).eval()
    x = torch.randn(1, 11, D)
    mask = torch.ones(1, 11, dtype=torch.bool)
    moved = x.clone()
    moved[0, 3] += 1.0
    changed = (layer(moved, mask) - layer(x, mask)).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [0, 3, 6, 9]


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(3)
    layer = LocalAttention(D, H, None, 0.0, window_size=5).eval()
    x = torch.randn(2, 13, D)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, 11:] = False
    longer = torch.cat([x, 100 * torch.randn(2, 9, D)], 1)  # garbage in the extra padding
    longer_mask = torch.cat([mask, torch.zeros(2, 9, dtype=torch.bool)], 1)
    longer[0, 11:13] = 100.0  # and in the padding that was already there
    torch.testing.assert_close(
        layer(longer, longer_mask)[:, :13][mask], layer(x, mask)[mask], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_gradients_match_finite_differences(lra_quirks):
    torch.manual_seed(4)
    layer = LocalAttention(6, 2, None, 0.0, window_size=3, lra_quirks=lra_quirks).double()
    x = torch.randn(1, 7, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 6 + [False]])
    assert torch.autograd.gradcheck(lambda t: layer(t, mask), (x,))


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_cost_grows_linearly_and_never_builds_l_by_l(lra_quirks):
    torch.manual_seed(5)
    layer = LocalAttention(8, 2, None, 0.0, window_size=64, lra_quirks=lra_quirks)
    largest, saved, (numel, op) = growth(layer, 8)
    assert largest <= 4.5 and saved <= 4.5, (largest, saved, op)
    assert numel < 4096 * 4096 // 16
    small, _ = largest_intermediate(training_step(layer, 1024, 8))
    assert small < 1024 * 1024 // 4


def test_bad_fields_raise():
    with pytest.raises(ValueError, match="window_size"):
        LocalAttention(D, H, None, 0.0, window_size=0)
    with pytest.raises(ValueError, match="num_attention_heads"):
        LocalAttention(D, 5, None, 0.0, window_size=4)
