"""The corruption (mega_lra/pretraining/masking.py, module.corrupt/score) as pure functions:
token and pixel masking, padding, rates, fresh and fixed masks, causal targets, loss reduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mega_lra.pretraining.masking import IGNORE, SPLIT_SALT, grey_levels, mix32, uniforms
from mega_lra.pretraining.module import corrupt, score
from mega_lra.pretraining.objectives import Objective
from tasks.collate import Collator
from tasks.tokenizers import EOS_ID, PAD_ID, UNK_ID

VOCAB = 18
MASKED_TOKENS = Objective("masked", 0.3, "tokens", VOCAB, mask_id=VOCAB)
CAUSAL_TOKENS = Objective("causal", None, "tokens", VOCAB)
NORM = {"scale": 1 / 255, "mean": 0.5, "std": 0.5}


def lowbias32(x: int) -> int:
    """The reference mixer in plain Python integers (C. Wellons' lowbias32)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def token_batch(lengths=(7, 3, 5), width=8, seed=0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, VOCAB, (n,), generator=gen) for n in lengths]
    ids = torch.full((len(rows), width), PAD_ID)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "lengths": torch.tensor(lengths),
        "labels": torch.zeros(len(rows), dtype=torch.long),
        "row_index": torch.arange(len(rows)),
    }


def test_the_hash_is_lowbias32_exactly():
    xs = torch.tensor([0, 1, 2, 12345, 0xFFFFFFFF, 0x80000000, 0xDEADBEEF], dtype=torch.int64)
    assert mix32(xs).tolist() == [lowbias32(int(x)) for x in xs]


def test_token_masking_uses_a_dedicated_id_and_scores_only_the_chosen_positions():
    batch = token_batch()
    out = corrupt(batch, MASKED_TOKENS, (1, 1))
    chosen = out["input_ids"] == VOCAB
    assert chosen.any()
    assert MASKED_TOKENS.mask_id == VOCAB not in (PAD_ID, EOS_ID, UNK_ID)  # one past the ids
    assert torch.equal(out["input_ids"][~chosen], batch["input_ids"][~chosen])
    assert torch.equal(out["spt_target"][chosen], batch["input_ids"][chosen])
    assert (out["spt_target"][~chosen] == IGNORE).all()
    assert torch.equal(out["spt_scored"], chosen)


def test_padding_is_never_masked_and_never_scored():
    batch = token_batch(lengths=(8, 1, 2, 4), width=8)
    pad = batch["attention_mask"] == 0
    for epoch in range(200):
        out = corrupt(batch, Objective("masked", 0.9, "tokens", VOCAB, VOCAB), (3, epoch))
        assert not out["spt_scored"][pad].any()
        assert (out["input_ids"][pad] == PAD_ID).all()
        assert (out["spt_target"][pad] == IGNORE).all()


@pytest.mark.parametrize("rate", [0.1, 0.15, 0.5])
def test_each_real_position_is_masked_with_probability_p(rate):
    real = torch.ones(64, 512, dtype=torch.bool)
    real[:, 400:] = False
    drawn = uniforms((7, 1), torch.arange(64), 512) < rate
    chosen = drawn & real
    n = int(real.sum())
    frac = float(chosen.sum()) / n
    assert abs(frac - rate) < 4 * (rate * (1 - rate) / n) ** 0.5
    # independent across positions: the per-row counts spread like a Binomial
    counts = chosen.sum(dim=1).double()
    assert abs(counts.var().item() / (400 * rate * (1 - rate)) - 1) < 0.5


def test_masks_are_fresh_every_epoch_fixed_by_the_seed_and_independent_of_batching():
    batch = token_batch(lengths=(8,) * 6, width=8)
    e1 = corrupt(batch, MASKED_TOKENS, (5, 1))["spt_scored"]
    e2 = corrupt(batch, MASKED_TOKENS, (5, 2))["spt_scored"]
    again = corrupt(batch, MASKED_TOKENS, (5, 1))["spt_scored"]
    other_seed = corrupt(batch, MASKED_TOKENS, (6, 1))["spt_scored"]
    assert torch.equal(e1, again)
    assert not torch.equal(e1, e2) and not torch.equal(e1, other_seed)
    # a row's mask depends on its row index, not on the rows batched with it
    half = {k: v[3:] for k, v in batch.items()}
    assert torch.equal(corrupt(half, MASKED_TOKENS, (5, 1))["spt_scored"], e1[3:])
    # val and test draw from their own fixed keys
    assert SPLIT_SALT["val"] != SPLIT_SALT["test"]


def test_causal_targets_are_the_next_token_and_the_last_real_position_is_ignored():
    batch = token_batch(lengths=(5, 2), width=6)
    out = corrupt(batch, CAUSAL_TOKENS, (1, 1))
    assert torch.equal(out["input_ids"], batch["input_ids"])  # nothing corrupted
    ids = batch["input_ids"]
    for row, n in enumerate((5, 2)):
        assert out["spt_target"][row, : n - 1].tolist() == ids[row, 1:n].tolist()
        assert (out["spt_target"][row, n - 1 :] == IGNORE).all()
        assert out["spt_scored"][row].sum() == n - 1


def pixel_batch(levels: np.ndarray) -> dict[str, torch.Tensor]:
    rows = [{"inputs": r, "labels": 0} for r in levels]
    out = Collator("pixels", normalization=NORM)(rows)
    out["row_index"] = torch.arange(len(levels))
    return out


def test_grey_levels_are_recovered_exactly_from_normalised_pixels():
    levels = np.arange(256, dtype=np.uint8).reshape(4, 64)
    batch = pixel_batch(levels)
    assert torch.equal(grey_levels(batch["inputs"], NORM), torch.from_numpy(levels).long())


@pytest.mark.parametrize("target", ["value", "grey"])
def test_pixel_masking_gives_the_two_channels_and_the_targets(target):
    levels = np.random.RandomState(0).randint(0, 256, (3, 50)).astype(np.uint8)
    batch = pixel_batch(levels)
    objective = Objective("masked", 0.5, target, 1 if target == "value" else 256)
    out = corrupt(batch, objective, (1, 1), NORM)
    m = out["spt_flag"]
    x = batch["inputs"]
    assert torch.equal(out["inputs"], x * (~m))  # channel 1: x (1 - m); channel 2: m
    assert torch.equal(out["spt_scored"], m)
    if target == "value":
        assert torch.equal(out["spt_target"][m], x[m])  # the normalised value
    else:
        assert torch.equal(out["spt_target"][m], torch.from_numpy(levels).long()[m])
        assert (out["spt_target"][~m] == IGNORE).all()


@pytest.mark.parametrize("target", ["tokens", "grey", "value"])
def test_unmasked_positions_contribute_exactly_zero_loss(target):
    outputs = {"tokens": VOCAB, "grey": 256, "value": 1}[target]
    objective = Objective("masked", 0.4, target, outputs, VOCAB if target == "tokens" else None)
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 10, outputs, generator=gen, requires_grad=True)
    scored = torch.rand(3, 10, generator=gen) < 0.4
    if target == "value":
        tgt = torch.randn(3, 10, generator=gen)
    else:
        tgt = torch.randint(0, outputs, (3, 10), generator=gen)
    loss = score(pred, tgt, scored, objective)[0]
    # change every unscored target and prediction: the loss is the same number
    tgt2, pred2 = tgt.clone(), pred.detach().clone()
    tgt2[~scored] = tgt2[~scored] * 0 + (7.5 if target == "value" else 3)
    pred2[~scored] = 100.0
    assert torch.equal(score(pred2, tgt2, scored, objective)[0], loss.detach())
    loss.backward()
    assert (pred.grad[~scored] == 0).all()


def test_the_loss_is_the_mean_over_every_scored_position_of_the_batch():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 6, VOCAB, generator=gen)
    tgt = torch.randint(0, VOCAB, (2, 6), generator=gen)
    scored = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 1, 0]], dtype=torch.bool)
    loss, total, hits, count = score(pred, tgt, scored, MASKED_TOKENS)
    each = [-torch.log_softmax(pred[b, t], -1)[tgt[b, t]] for b, t in scored.nonzero().tolist()]
    assert count == 5
    assert torch.allclose(loss, torch.stack(each).mean())  # not a mean of row means
    assert hits == sum(int(pred[b, t].argmax() == tgt[b, t]) for b, t in scored.nonzero().tolist())
    empty = score(pred, tgt, torch.zeros_like(scored), MASKED_TOKENS)[0]
    assert empty.item() == 0.0  # a batch without a masked position trains nothing


def test_retrieval_documents_are_independent_sequences():
    one = token_batch(lengths=(8, 8), width=8)
    pair = {
        "input_ids": one["input_ids"][None].expand(2, 2, 8).clone(),
        "attention_mask": one["attention_mask"][None].expand(2, 2, 8).clone(),
        "lengths": torch.full((2, 2), 8),
        "labels": torch.zeros(2, dtype=torch.long),
        "row_index": torch.tensor([0, 1]),
    }
    out = corrupt(pair, Objective("masked", 0.5, "tokens", VOCAB, VOCAB), (1, 1))
    assert out["input_ids"].shape == (4, 8)  # 2B single documents
    masks = out["spt_scored"]
    assert len({tuple(m.tolist()) for m in masks}) == 4  # each document masked on its own
