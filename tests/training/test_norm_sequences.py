"""Sequences per BatchNorm normalisation (`mega_lra/training/norm_sequences.py`): every BatchNorm
recipe records the paper's number, the default recipes on one device match it, and a run that
normalises over another number prints one line at its start."""

from __future__ import annotations

import pytest

from mega_lra.training.config import compose
from mega_lra.training.norm_sequences import (
    announce_norm_sequences,
    norm_sequences,
    norm_sequences_note,
)
from mega_lra.training.runner import train
from tests.helpers import tiny
from tests.training.helpers import run_overrides

# mega_paper_and_code.md §2.1, transcribed: norm, batch per GPU, GPUs (1 except Path-X, on 8)
PAPER = {
    "image": ("batchnorm", 50, 1),
    "pathfinder": ("batchnorm", 128, 1),
    "pathx": ("syncbatchnorm", 2, 8),
    "sc_raw": ("batchnorm", 20, 1),
}
BN_RECIPES = [(f"lra/{m}/{t}", t) for m in ("mega", "mega_chunk") for t in PAPER if t != "sc_raw"]
BN_RECIPES += [(f"speech/mega_sc_raw_{s}", "sc_raw") for s in ("base", "big")]


def paper_sequences(task: str) -> int:
    norm, per_gpu, gpus = PAPER[task]
    return per_gpu * gpus if norm == "syncbatchnorm" else per_gpu


@pytest.mark.parametrize("experiment,task", BN_RECIPES)
def test_batchnorm_recipes_record_the_papers_number_and_match_it_on_one_device(
    experiment, task, capsys
):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.model.normalization_type == PAPER[task][0]
    assert cfg.paper_norm_sequences == paper_sequences(task)
    assert norm_sequences(cfg) == paper_sequences(task)
    assert announce_norm_sequences(cfg) is None
    assert capsys.readouterr().out == ""


def test_pathx_normalises_over_16_with_one_device_or_eight():
    one = compose(["experiment=lra/mega/pathx"])
    assert (one.loader.batch_size, norm_sequences(one)) == (16, 16)
    eight = compose(
        ["experiment=lra/mega/pathx", "trainer=ddp", "trainer.devices=8", "loader.batch_size=2"]
    )
    assert norm_sequences(eight) == 16 and norm_sequences_note(eight) is None
    # the trainer's real process count wins over the config's
    assert norm_sequences(one, world_size=8) == 128


@pytest.mark.parametrize(
    "overrides,ours,paper",
    [
        (["experiment=lra/mega/pathx", "loader.batch_size=2"], 2, 16),
        (["experiment=lra/mega_chunk/pathx", "trainer=ddp", "trainer.devices=8"], 128, 16),
        (["experiment=lra/mega/image", "loader.batch_size=25"], 25, 50),
        (["experiment=speech/mega_sc_raw_big", "loader.batch_size=10"], 10, 20),
    ],
)
def test_another_number_prints_one_line(overrides, ours, paper, capsys):
    cfg = compose(overrides)
    note = announce_norm_sequences(cfg)
    out = capsys.readouterr().out
    assert out == note + "\n" and out.count("\n") == 1
    assert f"over {ours} sequences" in note and f"normalises over {paper}" in note
    assert cfg.model.normalization_type in note
    # only the first process prints
    assert announce_norm_sequences(cfg, is_global_zero=False) == note
    assert capsys.readouterr().out == ""


def test_no_line_without_batchnorm_or_without_the_papers_number(capsys):
    # the Transformer shares the Image recipe but has no BatchNorm
    transformer = compose(["experiment=lra/transformer/image", "loader.batch_size=25"])
    assert norm_sequences(transformer) is None
    # BatchNorm outside a recipe: nothing to compare with
    plain = compose(["task=image", "model=mega", "model.normalization_type=batchnorm"])
    assert norm_sequences(plain) == plain.loader.batch_size
    for cfg in (transformer, plain):
        assert announce_norm_sequences(cfg) is None
    assert capsys.readouterr().out == ""


def test_a_run_prints_the_line_at_its_start(lra_data, tmp_path, capsys):
    """The runner's call: a 1-step Pathfinder run (recipe: 128 per normalisation) with batch 2."""
    cfg = compose(
        [
            "experiment=lra/mega_chunk/pathfinder",
            *tiny("mega_chunk"),
            *run_overrides(lra_data, steps=1, batch=2),
            "trainer.limit_val_batches=1",
        ],
        run_dir=tmp_path / "run",
    )
    train(cfg)
    lines = [
        line for line in capsys.readouterr().out.splitlines() if "paper_norm_sequences" in line
    ]
    assert lines == [
        "[mega-lra] batchnorm: statistics over 2 sequences per normalisation "
        "(loader.batch_size 2); the paper's recipe normalises over 128 (paper_norm_sequences), "
        "so training may differ"
    ]
