"""The two optional behaviours of reference §5: span masking (`spt.span_length`,
masking.choose_spans) and the random-init ablation (`spt.random_init_std`, model.random_init),
both off by default and then bit-identical to the runs without them."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mega_lra.pretraining.masking import choose_positions, choose_spans, uniforms
from mega_lra.pretraining.module import corrupt
from mega_lra.pretraining.objectives import Objective, resolve_objective
from mega_lra.training.config import compose
from mega_lra.training.run_dir import group_differences, group_hash
from mega_lra.training.runner import build, train
from tests.helpers import tiny
from tests.pretraining.test_masking import VOCAB, token_batch
from tests.pretraining.test_objectives_and_transfer import TOKENS, classifier
from tests.training.helpers import run_overrides, write_listops_release

SPAN_TOKENS = Objective("masked", 0.3, "tokens", VOCAB, mask_id=VOCAB, span=3)


def runs(row: torch.Tensor) -> list[int]:
    """The lengths of the maximal runs of True in a 1-D bool tensor."""
    out, n = [], 0
    for x in row.tolist() + [False]:
        if x:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def ragged(lengths, width) -> torch.Tensor:
    return torch.arange(width)[None] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("rate,span", [(0.15, 1), (0.15, 3), (0.5, 4), (0.5, 7), (0.9, 2)])
def test_spans_do_not_overlap_their_count_is_int_L_p_over_span_and_padding_is_never_touched(
    rate, span
):
    lengths = (64, 37, 20, 9, 3, 1, 0, 50)
    real = ragged(lengths, 64)
    real[7, 10:14] = False  # real positions need not be a prefix: ranks over real ones only
    for epoch in range(30):
        chosen = choose_spans(real, rate, span, (11, epoch), torch.arange(len(lengths)))
        assert not chosen[~real].any()
        for row in range(len(lengths)):
            n_real = int(real[row].sum())
            count = int(n_real * rate / span)  # NFS: int((L * p) / span)
            # exactly count * span positions covered: spans of `span` that do not overlap
            assert int(chosen[row].sum()) == count * span
            on_real = chosen[row][real[row]]  # in real-rank order
            assert all(r % span == 0 for r in runs(on_real))


def test_span_placements_are_uniform_over_every_non_overlapping_layout():
    # L = 5, p = 0.8, span 2: int(5 * 0.8 / 2) = 2 spans; 3 layouts, each 1/3 of the draws
    real = torch.ones(1, 5, dtype=torch.bool)
    draws = 3000
    seen = Counter(
        tuple(choose_spans(real, 0.8, 2, (3, e), torch.zeros(1, dtype=torch.long))[0].tolist())
        for e in range(draws)
    )
    layouts = {(1, 1, 1, 1, 0), (1, 1, 0, 1, 1), (0, 1, 1, 1, 1)}
    assert {tuple(int(x) for x in k) for k in seen} == layouts
    sd = math.sqrt(draws * (1 / 3) * (2 / 3))
    assert all(abs(n - draws / 3) < 5 * sd for n in seen.values())


def test_span_masks_are_reproducible_per_seed_and_epoch_fresh_across_epochs_and_batching_free():
    batch = token_batch(lengths=(8,) * 6, width=8, seed=1)
    big = {**batch, "input_ids": batch["input_ids"].repeat(1, 8)}
    big["attention_mask"] = torch.ones_like(big["input_ids"])
    big["lengths"] = torch.full((6,), 64)
    e1 = corrupt(big, SPAN_TOKENS, (5, 1))["spt_scored"]
    assert torch.equal(e1, corrupt(big, SPAN_TOKENS, (5, 1))["spt_scored"])
    assert not torch.equal(e1, corrupt(big, SPAN_TOKENS, (5, 2))["spt_scored"])
    assert not torch.equal(e1, corrupt(big, SPAN_TOKENS, (6, 1))["spt_scored"])
    half = {k: v[3:] for k, v in big.items()}  # a row's spans depend on its index, not on others
    assert torch.equal(corrupt(half, SPAN_TOKENS, (5, 1))["spt_scored"], e1[3:])


def test_span_masking_corrupts_and_scores_exactly_the_spans():
    batch = token_batch(lengths=(20, 11, 4), width=20)
    out = corrupt(batch, SPAN_TOKENS, (2, 1))
    chosen = choose_spans(batch["attention_mask"], 0.3, 3, (2, 1), batch["row_index"])
    assert torch.equal(out["spt_scored"], chosen) and torch.equal(out["input_ids"] == VOCAB, chosen)
    assert torch.equal(out["spt_target"][chosen], batch["input_ids"][chosen])
    assert chosen.sum(dim=1).tolist() == [6, 3, 0]  # int(20·0.3/3) = 2, int(11·0.3/3) = 1, 0


def test_without_span_length_the_masks_are_the_bernoulli_ones_bit_for_bit():
    backbone = classifier("transformer").backbone
    objective = resolve_objective({"span_length": None}, TOKENS, backbone)
    assert objective == resolve_objective({}, TOKENS, backbone) and objective.span is None
    assert "span" not in objective.to_dict()  # pretraining records as before
    batch = token_batch(lengths=(8, 1, 5, 3), width=8)
    for epoch in range(20):
        key = (9, epoch)
        expected = (uniforms(key, batch["row_index"], 8) < 0.1) & batch["attention_mask"].bool()
        scored = corrupt(batch, objective, key)["spt_scored"]
        assert torch.equal(scored, expected)
        assert torch.equal(
            scored, choose_positions(batch["attention_mask"], 0.1, key, torch.arange(4))
        )


def test_span_length_is_validated_with_the_key_named():
    backbone = classifier("transformer").backbone
    assert resolve_objective({"span_length": 4}, TOKENS, backbone).span == 4
    assert resolve_objective({"span_length": 4}, TOKENS, backbone).to_dict()["span"] == 4
    for bad in (0, -2, 2.5, 0.3, True, "3"):
        with pytest.raises(ValueError, match="spt.span_length"):
            resolve_objective({"span_length": bad}, TOKENS, backbone)
    with pytest.raises(ValueError, match="spt.span_length=3 with the causal objective"):
        resolve_objective({"span_length": 3}, TOKENS, classifier("s4_v1").backbone)


# ------------------------------------------------------------------------ random init
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_listops_release(
        tmp_path_factory.mktemp("spt-ablation-data"), {"train": 8, "val": 4, "test": 4}
    )


def overrides(data: Path, *extra: str, model: str = "mega_chunk") -> list[str]:
    return ["task=listops", f"model={model}", *tiny(model), *run_overrides(data, steps=2), *extra]


def built(data: Path, *extra: str, seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)  # as the runner's seed_everything before build
    return build(compose(overrides(data, *extra)), progress=False).model


def assert_normal(model: torch.nn.Module, std: float) -> None:
    """Every parameter's mean and std as N(0, std²) draws (6 standard errors)."""
    pooled = []
    for name, p in model.named_parameters():
        x = p.detach().double().flatten()
        pooled.append(x)
        n = x.numel()
        assert abs(x.mean().item()) < 6 * std / math.sqrt(n), name
        if n >= 8:
            assert abs(x.std().item() - std) < 6 * std / math.sqrt(2 * (n - 1)), name
        else:
            assert x.abs().max().item() < 6 * std, name
    x = torch.cat(pooled)
    assert abs(x.std().item() - std) < 0.05 * std and abs(x.mean().item()) < 0.05 * std


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_random_init_resets_every_parameter_to_a_centred_normal_of_that_std(data, stage):
    own = built(data, f"stage={stage}")
    model = built(data, f"stage={stage}", "spt.random_init_std=0.1")
    a, b = dict(own.named_parameters()), dict(model.named_parameters())
    assert a.keys() == b.keys() and all(not torch.equal(a[k], b[k]) for k in a)
    assert_normal(model, 0.1)
    assert_normal(built(data, f"stage={stage}", "spt.random_init_std=0.5"), 0.5)
    buffers = dict(own.named_buffers())  # buffers (positions, fixed kernels) are kept
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


def test_without_random_init_std_the_init_is_bit_identical(data):
    own = built(data).state_dict()
    off = built(data, "spt.random_init_std=null").state_dict()
    assert own.keys() == off.keys() and all(torch.equal(own[k], off[k]) for k in own)
    for extra in ([], ["stage=pretrain"]):  # the options at their defaults leave the group as is
        cfg = OmegaConf.to_container(compose(overrides(data, *extra)), resolve=True)
        old = {**cfg, "spt": {k: v for k, v in cfg["spt"].items() if k not in NEW_KEYS}}
        filled = {**cfg, "spt": {**cfg["spt"], "mask_rate": 0.1}}  # as configure_pretrain does
        old_filled = {
            **filled,
            "spt": {k: v for k, v in filled["spt"].items() if k not in NEW_KEYS},
        }
        assert group_hash(cfg) == group_hash(old) and not group_differences(old, cfg)  # resume
        assert group_hash(filled) == group_hash(old_filled) != group_hash(cfg)
        on = {**cfg, "spt": {**cfg["spt"], "random_init_std": 0.1}}
        assert group_hash(on) != group_hash(cfg)


NEW_KEYS = ("span_length", "random_init_std")


@pytest.mark.parametrize("bad", ["0", "-0.1", "true", "abc", "inf"])
def test_a_wrong_random_init_std_is_refused_by_name_before_the_run_dir_is_touched(
    data, tmp_path, bad
):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="spt.random_init_std"):
        train(compose(overrides(data, f"spt.random_init_std={bad}"), run_dir=run_dir))
    assert not run_dir.exists()


def test_both_options_run_through_a_pretraining_stage(data, tmp_path):
    record = train(
        compose(
            overrides(data, "stage=pretrain", "spt.span_length=3", "spt.random_init_std=0.1"),
            run_dir=tmp_path / "pre",
        )
    )
    assert record["objective"]["span"] == 3 and record["steps"] == 2
    saved = OmegaConf.load(tmp_path / "pre" / "config.yaml")
    assert saved.spt.span_length == 3 and saved.spt.random_init_std == 0.1
