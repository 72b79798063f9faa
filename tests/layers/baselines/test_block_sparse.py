"""BigBird's block-sparse attention: its values against a dense masked softmax (float64) whose
boolean mask is built here, independently, from the pattern's definition and the layer's random
blocks; its values against transformers' `BigBirdBlockSparseAttention` (committed fixtures);
the random-block rules; padding invariance; gradients; linear cost; field errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mega_lra.layers.baselines.block_sparse import BlockSparseAttention
from tests.models.cost_probe import growth

FIXTURES = Path(__file__).parent / "fixtures" / "bigbird"


def make(hidden=8, heads=2, block=4, rand=2, first=None, max_length=None, seed=0, **kw):
    torch.manual_seed(seed)
    attn = BlockSparseAttention(
        hidden,
        heads,
        kw.pop("qkv_size", None),
        kw.pop("dropout", 0.0),
        max_length,
        block_size=block,
        num_random_blocks=rand,
        random_blocks_from_first=first,
    )
    return attn.double().eval()


def dense_reference(attn: BlockSparseAttention, x: torch.Tensor, mask: torch.Tensor):
    """softmax(Q K^T / sqrt(d) + M) V W_O over the padded length, M = -inf outside the pattern
    (first and last query blocks: every block; middle block i: 0, i-1, i, i+1, n-1 and the
    layer's random blocks) or at padded keys; then cut back to x's length."""
    b, h = attn.block_size, attn.num_heads
    length = x.size(1)
    padded = attn.layout_length(length)
    x = torch.nn.functional.pad(x, (0, 0, 0, padded - length))
    keep = torch.nn.functional.pad(mask, (0, padded - length), value=False)
    n = padded // b
    p = attn.proj
    d = p.head_size

    def heads_of(w):  # (B, Lp, D) -> (B, h, Lp, d)
        return (x @ w.weight.T).view(x.size(0), padded, h, d).transpose(1, 2)

    q, k, v = heads_of(p.query), heads_of(p.key), heads_of(p.value)
    allowed = torch.zeros(h, padded, padded, dtype=torch.bool)
    if n <= attn.num_random_blocks + 5:
        allowed[:] = True
    else:
        rand = attn.random_blocks(n)
        for head in range(h):
            for i in range(n):
                if i in (0, n - 1):
                    blocks = set(range(n))
                else:
                    blocks = {0, i - 1, i, i + 1, n - 1} | set(rand[head, i - 1].tolist())
                for j in blocks:
                    allowed[head, i * b : (i + 1) * b, j * b : (j + 1) * b] = True
    allowed = allowed[None] & keep[:, None, None, :]  # (B, h, Lp, Lp)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~allowed, -math.inf)
    y = scores.softmax(-1) @ v  # (B, h, Lp, d)
    y = y.transpose(1, 2).reshape(x.size(0), padded, h * d) @ p.out.weight.T
    return y[:, :length]


def inputs(batch, length, hidden, lengths, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, hidden, generator=gen, dtype=torch.float64)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return x, mask


@pytest.mark.parametrize(
    ("length", "lengths", "rand", "first", "max_length"),
    [
        (45, [45, 30], 2, None, None),  # 12 blocks of 4, sparse; internal padding to 48
        (64, [64, 50], 3, 28, None),  # random blocks only from the first 28 tokens
        (50, [37, 50], 1, None, 70),  # laid on max_length 70 -> 72, 18 blocks
        (22, [22, 9], 2, None, None),  # 6 blocks <= r + 5: full attention
        (3, [3, 2], 2, None, None),  # shorter than one block
    ],
)
def test_matches_dense_masked_softmax(length, lengths, rand, first, max_length):
    attn = make(rand=rand, first=first, max_length=max_length)
    x, mask = inputs(2, length, 8, lengths)
    y = attn(x, mask)
    expected = dense_reference(attn, x, mask)
    torch.testing.assert_close(y[mask], expected[mask], rtol=1e-10, atol=1e-12)
    assert torch.isfinite(y).all()


def test_matches_dense_with_qkv_size_and_four_heads():
    attn = make(hidden=8, heads=4, qkv_size=16, block=2, rand=3)
    x, mask = inputs(1, 40, 8, [33])
    torch.testing.assert_close(attn(x, mask)[mask], dense_reference(attn, x, mask)[mask])


@pytest.mark.parametrize("n_blocks", [9, 12, 40])
@pytest.mark.parametrize("first", [None, 32])
def test_random_blocks_avoid_window_and_globals(n_blocks, first):
    attn = make(hidden=6, heads=3, block=4, rand=3, first=first)
    rand = attn.random_blocks(n_blocks)
    assert rand.shape == (3, n_blocks - 2, 3)
    limit = n_blocks - 1 if first is None else min(n_blocks - 1, first // 4)
    for head in range(3):
        for i in range(1, n_blocks - 1):
            row = rand[head, i - 1].tolist()
            assert len(set(row)) == 3
            assert all(1 <= j < limit and abs(j - i) > 1 for j in row), (i, row)


def test_random_blocks_limit_to_first_tokens_only_when_asked():
    free, limited = make(block=4, rand=3, first=None), make(block=4, rand=3, first=64)
    assert int(free.random_blocks(64).max()) >= 16  # some draw past token 64
    assert int(limited.random_blocks(64).max()) < 16


def test_random_blocks_are_fixed_per_layer_and_saved():
    attn = make(rand=3, seed=0)
    first = attn.random_blocks(20).clone()
    x, mask = inputs(1, 80, 8, [80])
    attn.train()  # fixed in training too
    y1, y2 = attn(x, mask), attn(x, mask)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(attn.random_blocks(20), first)
    other = make(rand=3, seed=1)
    assert not torch.equal(other.random_blocks(20), first)  # another layer, another draw
    wrapper = torch.nn.Sequential(other)
    wrapper.load_state_dict(torch.nn.Sequential(attn).state_dict())
    torch.testing.assert_close(other.random_blocks(20), first)  # the seed travels with weights
    torch.testing.assert_close(other(x, mask), attn(x, mask))
    heads = attn.random_blocks(20)
    assert not torch.equal(heads[0], heads[1])  # per head


def test_padding_does_not_change_real_tokens():
    attn = make(rand=2, max_length=64)
    x, mask = inputs(2, 64, 8, [37, 50])
    y = attn(x, mask)
    garbage = x.clone()
    garbage[~mask] = 1e3 * torch.randn_like(garbage[~mask])
    torch.testing.assert_close(attn(garbage, mask)[mask], y[mask], rtol=1e-10, atol=1e-12)
    for cut in (50, 52, 61):  # the batch's longest row decides L; the pattern does not change
        torch.testing.assert_close(
            attn(x[:, :cut], mask[:, :cut])[mask[:, :cut]],
            y[:, :cut][mask[:, :cut]],
            rtol=1e-10,
            atol=1e-12,
        )


def test_padding_within_the_last_block_changes_nothing_without_max_length():
    attn = make(rand=2)
    x, mask = inputs(1, 45, 8, [45])
    y = attn(x, mask)
    longer = torch.nn.functional.pad(x, (0, 0, 0, 3))
    keep = torch.nn.functional.pad(mask, (0, 3), value=False)
    torch.testing.assert_close(attn(longer, keep)[:, :45], y, rtol=1e-10, atol=1e-12)


def test_gradcheck_float64():
    attn = make(hidden=4, heads=2, block=2, rand=1)
    x, mask = inputs(1, 15, 4, [13])  # 8 blocks, sparse
    x.requires_grad_(True)
    assert attn.is_sparse(8)
    assert torch.autograd.gradcheck(lambda t: attn(t, mask)[mask], (x,), fast_mode=True)
    params = [p for p in attn.parameters()]
    grads = torch.autograd.grad(attn(x, mask)[mask].square().sum(), params)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_dropout_only_in_training():
    attn = make(rand=2, dropout=0.5)
    x, mask = inputs(1, 48, 8, [48])
    torch.testing.assert_close(attn(x, mask), dense_reference(attn, x, mask))
    attn.train()
    assert not torch.allclose(attn(x, mask), attn(x, mask))


def test_cost_grows_linearly_and_never_builds_length_squared():
    torch.manual_seed(0)
    attn = BlockSparseAttention(8, 2, None, 0.0, None, block_size=64, num_random_blocks=3)
    largest_ratio, saved_ratio, (largest, op) = growth(attn, width=8)
    assert largest_ratio <= 4.5 and saved_ratio <= 4.5, (largest_ratio, saved_ratio)
    assert largest < 4096 * 4096, op


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"block_size": 0}, "block_size"),
        ({"num_random_blocks": -1}, "num_random_blocks"),
        ({"block_size": 64, "random_blocks_from_first": 256}, "random_blocks_from_first"),
        ({"attention_dropout_prob": 1.0}, "attention_dropout_prob"),
        ({"num_attention_heads": 3}, "qkv_size"),
    ],
)
def test_bad_fields_raise(kw, message):
    args = {"hidden_size": 8, "num_attention_heads": 2, "attention_dropout_prob": 0.0, **kw}
    with pytest.raises(ValueError, match=message):
        BlockSparseAttention(
            args.pop("hidden_size"),
            args.pop("num_attention_heads"),
            None,
            args.pop("attention_dropout_prob"),
            None,
            **args,
        )


def test_pin_random_blocks_checks_shape_and_range():
    attn = make(rand=2)
    with pytest.raises(ValueError, match="shape"):
        attn.pin_random_blocks(10, torch.zeros(2, 7, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        attn.pin_random_blocks(10, torch.full((2, 8, 2), 10))
    with pytest.raises(ValueError, match="full attention"):
        attn.random_blocks(7)


def test_extra_padding_block_pads_as_lra():
    attn = make(rand=2, max_length=64)
    lra = make(rand=2, max_length=64)
    lra.extra_padding_block = True
    assert (attn.layout_length(64), lra.layout_length(64)) == (64, 68)  # 1024 -> 1088 at b = 64
    free = make(rand=2)
    free.extra_padding_block = True
    assert free.layout_length(62) == 64  # b - L % b tokens
    x, mask = inputs(1, 64, 8, [64])
    torch.testing.assert_close(lra(x, mask), dense_reference(lra, x, mask))


@pytest.mark.parametrize("case", ["small", "wide"])
def test_matches_transformers_bigbird_with_its_random_blocks(case):
    """transformers' BigBirdBlockSparseAttention (train mode, no biases, float64; fixtures from
    tools/baseline_reference/bigbird_fixtures.py) with its own random draw pinned into ours; its
    output is the merged heads before any output layer, so W_O is the identity here."""
    data = np.load(FIXTURES / "hf_block_sparse.npz")
    hidden, heads, block, rand = data[f"{case}/config"].tolist()
    attn = make(hidden=hidden, heads=heads, block=block, rand=rand)
    with torch.no_grad():
        for name in ("query", "key", "value"):
            getattr(attn.proj, name).weight.copy_(torch.from_numpy(data[f"{case}/w_{name}"]))
        attn.proj.out.weight.copy_(torch.eye(hidden, dtype=torch.float64))
    x = torch.from_numpy(data[f"{case}/x"])
    mask = torch.from_numpy(data[f"{case}/mask"])
    n_blocks = x.size(1) // block
    attn.pin_random_blocks(n_blocks, torch.from_numpy(data[f"{case}/random_blocks"]))
    expected = torch.from_numpy(data[f"{case}/context"])
    torch.testing.assert_close(attn(x, mask)[mask], expected[mask], rtol=1e-9, atol=1e-11)
