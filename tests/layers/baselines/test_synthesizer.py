"""Synthesizer attention against a float64 dense softmax whose synthesized logits are rebuilt from
the formulas (explicit sums over the parameters); padding invariance; gradients; init; errors."""

from __future__ import annotations

import math

import pytest
import torch

from mega_lra.layers.baselines.synthesizer import SynthesizerAttention

WIDTH, HEADS, QKV, MAX = 8, 2, 6, 16


def make(mode="random", dot=True, rank=3, max_length=MAX):
    torch.manual_seed(0)
    return SynthesizerAttention(
        WIDTH,
        HEADS,
        QKV,
        0.0,
        max_length,
        synthesizer_mode=mode,
        use_dot_product=dot,
        factor_rank=rank,
    ).double()


def batch(length=11, real=(11, 7)):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(real), length, WIDTH, generator=gen, dtype=torch.float64)
    mask = torch.arange(length)[None, :] < torch.tensor(real)[:, None]
    return x, mask


def synthesized_reference(layer: SynthesizerAttention, x) -> torch.Tensor:
    """S[b, h, i, j] from the paper's formulas, by explicit index sums: (B, h, L, L)."""
    b, length, _ = x.shape
    h, d = HEADS, QKV // HEADS
    if layer.mode == "random":
        r = layer.random.detach()
        return torch.stack([r[:, :length, :length]] * b)
    if layer.mode == "factorized_random":
        r1, r2 = layer.random1.detach(), layer.random2.detach()
        s = torch.zeros(h, length, length, dtype=x.dtype)
        for rank in range(r1.size(-1)):
            s += r1[:, :length, rank, None] * r2[:, None, rank, :length]
        return torch.stack([s] * b)
    w1, w2 = layer.dense1.weight.detach(), layer.dense2.weight.detach()  # (h*d, D), (M, d)
    s = torch.zeros(b, h, length, length, dtype=x.dtype)
    for head in range(h):
        hidden = torch.relu(x @ w1[head * d : (head + 1) * d].T)  # token i's head slice (B, L, d)
        s[:, head] = (hidden @ w2.T)[..., :length]  # row i = W_2 ReLU(W_1 x_i)_h
    return s


def dense_reference(layer: SynthesizerAttention, x, mask) -> torch.Tensor:
    h, d = HEADS, QKV // HEADS
    b, length, _ = x.shape

    def heads(w):  # (B, L, h*d) -> (B, h, L, d)
        return (x @ w.detach().T).view(b, length, h, d).permute(0, 2, 1, 3)

    logits = synthesized_reference(layer, x)
    if layer.use_dot_product:
        logits = logits + heads(layer.query.weight) @ heads(layer.key.weight).transpose(-1, -2) / (
            math.sqrt(d)
        )
    logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    y = logits.softmax(-1) @ heads(layer.value.weight)  # (B, h, L, d)
    return y.permute(0, 2, 1, 3).reshape(b, length, h * d) @ layer.out.weight.detach().T


CASES = [(m, dot) for m in ("random", "factorized_random", "dense") for dot in (True, False)]


@pytest.mark.parametrize("mode,dot", CASES)
def test_matches_dense_softmax_with_the_formula_logits(mode, dot):
    layer = make(mode, dot)
    x, mask = batch()
    got = layer(x, mask)
    assert torch.allclose(got[mask], dense_reference(layer, x, mask)[mask], atol=1e-12)
    assert torch.isfinite(got).all()
    assert hasattr(layer, "query") == dot and hasattr(layer, "key") == dot


def test_dense_rows_are_per_token_transposed_not_reshaped():
    # row i of S_h depends on token i alone (LRA's reshape would mix tokens and heads)
    layer = make("dense", dot=False)
    x, _ = batch(length=9, real=(9, 9))
    x2 = x.clone()
    x2[:, 4] += 1.0
    changed = (layer.synthesized(x2) - layer.synthesized(x)).abs().amax(dim=(0, 1, 3))  # per row i
    assert changed[4] > 0 and changed[torch.arange(9) != 4].max() == 0


@pytest.mark.parametrize("mode", ["random", "factorized_random", "dense"])
def test_extra_padding_does_not_change_real_tokens(mode):
    layer = make(mode).float()
    x, mask = batch(length=10, real=(10, 6))
    x = x.float()
    y = layer(x, mask)
    x2 = torch.cat([x.masked_fill(~mask[..., None], 2.0), torch.randn(2, 5, WIDTH) * 5], 1)
    mask2 = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    y2 = layer(x2, mask2)
    assert torch.allclose(y2[:, :10][mask], y[mask], atol=1e-6)
    assert torch.isfinite(y2).all()


@pytest.mark.parametrize("mode", ["random", "factorized_random", "dense"])
def test_gradcheck(mode):
    layer = make(mode, rank=2, max_length=6)
    x, mask = batch(length=5, real=(5, 3))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: layer(t, mask), (x,))
    layer(x, mask).sum().backward()
    params = [layer.random] if mode == "random" else []
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_random_init_is_xavier_with_flax_fans():
    # R (h, M, M): fan_in = fan_out = h * M; R1 (h, M, k), R2 (h, k, M): fans h * M and h * k
    torch.manual_seed(0)
    r = SynthesizerAttention(WIDTH, 4, None, 0.0, 64).random
    bound = math.sqrt(6 / (2 * 4 * 64))
    assert r.shape == (4, 64, 64) and bound * 0.99 < r.abs().max() <= bound
    f = SynthesizerAttention(WIDTH, 4, None, 0.0, 64, synthesizer_mode="factorized_random")
    bound = math.sqrt(6 / (4 * 64 + 4 * 32))
    for p in (f.random1, f.random2):
        assert bound * 0.99 < p.abs().max() <= bound
    assert f.random1.shape == (4, 64, 32) and f.random2.shape == (4, 32, 64)


def test_bad_fields_and_lengths_are_one_clear_error():
    with pytest.raises(ValueError, match="synthesizer_mode='mixture'"):
        SynthesizerAttention(WIDTH, 2, None, 0.0, 8, synthesizer_mode="mixture")
    with pytest.raises(ValueError, match="max_length"):
        SynthesizerAttention(WIDTH, 2, None, 0.0, None)
    with pytest.raises(ValueError, match="factor_rank=0"):
        SynthesizerAttention(
            WIDTH, 2, None, 0.0, 8, synthesizer_mode="factorized_random", factor_rank=0
        )
    with pytest.raises(ValueError, match="max_length=16384 with 2 heads"):  # Path-X
        SynthesizerAttention(WIDTH, 2, None, 0.0, 16384)
    SynthesizerAttention(
        WIDTH, 2, None, 0.0, 16384, synthesizer_mode="factorized_random", factor_rank=2
    )
    layer = make(max_length=6)
    x, mask = batch(length=7, real=(7, 7))
    with pytest.raises(ValueError, match="length 7 exceeds the Synthesizer's max_length 6"):
        layer(x, mask)
