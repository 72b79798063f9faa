"""The Sparse Transformer's fixed pattern, block-sparse, against a dense masked float64 softmax
whose L x L mask is rebuilt from the pattern's formulas; padding invariance; gradients; the cost
of the block path (never an L x L tensor)."""

from __future__ import annotations

import pytest
import torch

from mega_lra.layers.baselines.fixed_sparse import FixedSparseAttention
from tests.models.cost_probe import largest_intermediate, training_step


def pattern(length: int, l: int, c: int, lra_quirks: bool) -> torch.Tensor:
    """(L, L) bool, [i, j] = query i may attend to key j, from the formulas."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    same_block = i // l == j // l  # A(1)
    summary = j % l >= l - c  # A(2)
    if not lra_quirks:
        return same_block | summary
    return (same_block | summary | (j % l == 0)) & (j <= i)  # LRA: + column 0, causal


def dense_reference(layer: FixedSparseAttention, x, mask) -> torch.Tensor:
    """softmax over the allowed real keys, in float64, one L x L matrix per head."""
    p = layer.proj
    q, k, v = p.queries(x), p.keys(x), p.values(x)  # (B, h, L, d)
    logits = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5
    allowed = pattern(x.size(1), layer.block_size, layer.num_summary_columns, layer.lra_quirks)
    allowed = allowed[None, None] & mask[:, None, None, :]
    probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    return p.output(probs @ v)


def make(lra_quirks=False, heads=2, block_size=4, c=2, width=8, qkv=None):
    torch.manual_seed(0)
    return FixedSparseAttention(
        width,
        heads,
        qkv,
        0.0,
        None,
        block_size=block_size,
        num_summary_columns=c,
        lra_quirks=lra_quirks,
    ).double()


def batch(length=13, width=8, real=(13, 9)):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(real), length, width, generator=gen, dtype=torch.float64)
    mask = torch.arange(length)[None, :] < torch.tensor(real)[:, None]
    return x, mask


@pytest.mark.parametrize("lra_quirks", [False, True])
@pytest.mark.parametrize("block_size,c,length", [(4, 2, 13), (5, 1, 10), (3, 3, 7), (8, 2, 5)])
def test_matches_dense_masked_softmax_with_the_formula_pattern(lra_quirks, block_size, c, length):
    layer = make(lra_quirks, block_size=block_size, c=c, qkv=6)
    x, mask = batch(length, real=(length, max(1, length - 4)))
    got, want = layer(x, mask), dense_reference(layer, x, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-12)
    assert torch.isfinite(got).all()


def test_the_pattern_is_sparse_and_each_key_counted_once():
    # keys in the query's own block that are also summary columns must weigh as once, not twice:
    # with all-zero queries the weights are uniform over the allowed set
    layer = make(block_size=4, c=2)
    allowed = pattern(12, 4, 2, False)
    assert not allowed.all() and allowed.sum(1).tolist() == [8] * 12  # 4 own + 2 x 2 others
    with torch.no_grad():
        layer.proj.query.weight.zero_()
        layer.proj.out.weight.copy_(torch.eye(8))
        layer.proj.value.weight.copy_(torch.eye(8))
    x, mask = batch(12, real=(12,))
    want = (allowed.double() / allowed.sum(1, keepdim=True)) @ x[0]
    assert torch.allclose(layer(x, mask)[0], want, atol=1e-12)


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_extra_padding_does_not_change_real_tokens(lra_quirks):
    layer = make(lra_quirks, block_size=4, c=2).float()
    x, mask = batch(11, real=(11, 6))
    x = x.float()
    y = layer(x, mask)
    noise = torch.randn(2, 9, 8) * 5  # anything in the padded rows
    x2 = torch.cat([x.masked_fill(~mask[..., None], 3.0), noise], 1)
    mask2 = torch.cat([mask, torch.zeros(2, 9, dtype=torch.bool)], 1)
    y2 = layer(x2, mask2)
    assert torch.allclose(y2[:, :11][mask], y[mask], atol=1e-6)
    assert torch.isfinite(y2).all()


def test_all_padding_rows_stay_finite():
    layer = make(block_size=4, c=1)
    x, _ = batch(9, real=(9, 9))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :3] = True
    assert torch.isfinite(layer(x, mask)).all()


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_gradcheck(lra_quirks):
    layer = make(lra_quirks, heads=2, block_size=3, c=1, width=4)
    x, mask = batch(7, width=4, real=(7, 5))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: layer(t, mask), (x,))


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_cost_is_blocks_not_an_l_by_l_matrix(lra_quirks):
    # LRA's l = 50, c = 10, one head: the largest tensor is the (n, l, l + n*s) score block,
    # h * L' * (l + s * L' / l) ~ L^2 * s / l, a constant factor below L^2 (not linear in L)
    l, c = 50, 10
    layer = FixedSparseAttention(
        8, 1, 8, 0.0, None, block_size=l, num_summary_columns=c, lra_quirks=lra_quirks
    )
    s = c + 1 if lra_quirks else c
    for length in (1024, 4096):
        largest, op = largest_intermediate(training_step(layer, length, 8))
        padded = -(-length // l) * l
        assert largest == padded * (l + s * padded // l), op
        assert largest <= 2 * length**2 * s / l + 2 * length * l
        assert largest < 0.3 * length**2  # 0.26 (0.28 LRA) at 1K, 0.21 (0.23) at 4K


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"block_size": 0}, "block_size=0"),
        ({"num_summary_columns": 0}, "num_summary_columns=0"),
        ({"block_size": 4, "num_summary_columns": 5}, "num_summary_columns=5"),
    ],
)
def test_bad_fields_are_one_clear_error(fields, match):
    with pytest.raises(ValueError, match=match):
        FixedSparseAttention(8, 2, None, 0.0, None, **fields)
    with pytest.raises(ValueError, match="qkv_size=6"):
        FixedSparseAttention(8, 4, 6, 0.0, None)
