"""In-process runs of the stages (mega_lra.training.runner.train on composed configs): exact
resume after a kill in either stage, the loss beating the trivial baseline, the comparison
stage, nested training subsets, the group hash, and the experiment files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mega_lra.pretraining.stages import group_view
from mega_lra.training.checkpoint_files import load_checkpoint
from mega_lra.training.config import CONF_DIR, compose
from mega_lra.training.run_dir import group_hash
from mega_lra.training.runner import train
from tasks.datamodule import train_subset
from tests.helpers import tiny
from tests.pretraining.helpers import Killed
from tests.training.helpers import run_overrides, write_listops_release

CRASH = "+callbacks.crash={_target_: tests.pretraining.helpers.CrashAt, step: %d}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_listops_release(
        tmp_path_factory.mktemp("spt-stage-data"), {"train": 24, "val": 6, "test": 6}
    )


def overrides(data: Path, *extra: str, steps: int = 8, model: str = "mega_chunk") -> list[str]:
    return [
        "task=listops",
        f"model={model}",
        *tiny(model),
        *run_overrides(data, steps=steps),
        "model.dropout_prob=0.2",  # draws random numbers: resume must give them back
        "callbacks.last_checkpoint.every_n_train_steps=2",
        *extra,
    ]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_a_run_killed_in_either_stage_resumes_to_the_uninterrupted_result(data, tmp_path, stage):
    extra = ["stage=pretrain"]
    if stage == "finetune":
        pre = tmp_path / "pre"
        train(compose(overrides(data, "stage=pretrain", steps=4), run_dir=pre))
        extra = [f"pretrained={pre}"]
    whole = train(compose(overrides(data, *extra), run_dir=tmp_path / "whole"))
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        train(compose(overrides(data, *extra, CRASH % 5), run_dir=killed))
    assert load_checkpoint(killed / "checkpoints" / "last.ckpt")["global_step"] == 4
    resumed = train(compose(overrides(data, *extra, "resume=true"), run_dir=killed))
    a, b = weights(tmp_path / "whole"), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    key = "test_metric" if stage == "pretrain" else "test_accuracy"
    assert resumed[key] == whole[key] and resumed["steps"] == whole["steps"] == 8
    if stage == "finetune":  # the record still names the pretraining run it started from
        assert resumed["spt"]["checkpoint_sha256"] == whole["spt"]["checkpoint_sha256"]


def test_pretraining_beats_the_majority_token_within_a_few_dozen_steps(data, tmp_path):
    record = train(
        compose(
            overrides(
                data, "stage=pretrain", "spt.mask_rate=0.3", "model.hidden_size=32",
                "model.ffn_hidden_size=64", "optim.lr=0.01", "model.dropout_prob=0.0",
                "loader.batch_size=8", "sched.warmup_steps=10", steps=120, model="transformer",
            ),
            run_dir=tmp_path / "run",
        )
    )  # fmt: skip
    from tasks.listops import ListOpsTask

    built = ListOpsTask(source="files").build({"data_dir": data})
    ids = [t for row in built.dataset["val"]["input_ids"] for t in row]
    majority = Counter(ids).most_common(1)[0][1] / len(ids)
    # the trivial baseline: always the most frequent token (masks fall on real tokens uniformly)
    assert record["best_val_metric"] > majority + 0.3, (record["best_val_metric"], majority)
    assert record["test_metric"] > majority + 0.3, (record["test_metric"], majority)


def test_the_compare_stage_runs_every_arm_with_matched_steps(data, tmp_path):
    out = train(
        compose(
            overrides(data, "stage=compare", "spt.pretrain_steps=3", "spt.compare_matched=true",
                      steps=2),
            run_dir=tmp_path / "cmp",
        )
    )  # fmt: skip
    arms = out["arms"]
    assert arms["pretrain"]["steps"] == 3 and arms["scratch"]["steps"] == 2
    assert arms["finetune"]["steps"] == 2 and arms["finetune"]["total_steps"] == 5
    assert arms["scratch_matched"]["steps"] == 5
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved == json.loads(json.dumps(out))
    ft = json.loads((tmp_path / "cmp" / "finetune" / "results.json").read_text())
    assert Path(ft["spt"]["pretrain_run"]) == tmp_path / "cmp" / "pretrain"


def test_training_subsets_are_nested_prefixes_of_one_permutation(data):
    small, half, full = train_subset(1000, 0.1), train_subset(1000, 0.5), train_subset(1000, 1.0)
    assert len(small) == 100 and len(half) == 500 and np.array_equal(full, np.arange(1000))
    assert set(small) <= set(half)
    assert np.array_equal(train_subset(1000, 0.1), small)  # fixed, whatever the run's seed
    from mega_lra.training.runner import build

    cfg = compose(overrides(data, "task.train_fraction=0.5", "seed=7"))
    setup = build(cfg, progress=False)
    assert len(setup.datamodule.built.dataset["train"]) == 12
    assert len(setup.datamodule.built.dataset["val"]) == 6  # never subset
    with pytest.raises(Exception, match="train_fraction"):
        build(compose(overrides(data, "task.train_fraction=0")), progress=False)


def test_the_options_left_off_keep_every_groups_hash():
    resolved = OmegaConf.to_container(compose(["experiment=demo/listops"]), resolve=True)
    old = {k: v for k, v in resolved.items() if k not in ("stage", "pretrained", "spt")}
    old["task"] = {k: v for k, v in old["task"].items() if k != "train_fraction"}
    assert group_hash(resolved) == group_hash(old)
    # fine-tuning runs from per-seed pretraining run dirs of one group share a group
    a = group_view({**resolved, "pretrained": "runs/pre-seed1"}, "g1")
    b = group_view({**resolved, "pretrained": "runs/pre-seed2"}, "g1")
    c = group_view({**resolved, "pretrained": "runs/pre-other"}, "g2")
    assert group_hash(a) == group_hash(b) != group_hash(c) != group_hash(resolved)


def test_every_recipe_has_its_pretraining_experiment():
    root = CONF_DIR / "experiment"
    lra = {p.relative_to(root / "lra") for p in (root / "lra").glob("*/*.yaml")}
    spt = {p.relative_to(root / "spt") for p in (root / "spt").glob("*/*.yaml")}
    assert lra == spt
    for name in ("spt/mega/listops", "spt/s4_v1/image", "spt/transformer/pathfinder"):
        cfg = compose([f"experiment={name}"])
        recipe = compose([f"experiment=lra/{name[4:]}"])
        assert cfg.stage == "pretrain"
        a, b = OmegaConf.to_container(cfg), OmegaConf.to_container(recipe)
        assert {k for k in a if a[k] != b.get(k)} == {"stage", "run"}
