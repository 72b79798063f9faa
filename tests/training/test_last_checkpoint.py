"""`last.ckpt` around epoch ends: a run stopped just after an epoch ended resumes to exactly the
uninterrupted run (Lightning resumes a checkpoint taken at an epoch's last batch or in its end
hooks into an empty or mis-seeded next epoch, so none is taken there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mega_lra.training.config import compose
from mega_lra.training.runner import train
from tests.helpers import tiny
from tests.training.helpers import run_overrides, write_listops_release
from tests.training.launch_helpers import Interrupted

STEPS = 12  # 16 rows at batch 2: 8 steps per epoch


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("epoch-end-data")
    return write_listops_release(d, {"train": 16, "val": 5, "test": 5})


def run(data: Path, run_dir: Path, *extra: str) -> dict:
    cfg = compose(
        [
            "task=listops",
            "model=mega_chunk",
            *tiny("mega_chunk"),
            *run_overrides(data, steps=STEPS),
            "model.dropout_prob=0.2",
            "callbacks.last_checkpoint.every_n_train_steps=4",  # 4 and 8 (= the epoch end)
            *extra,
        ],
        run_dir=run_dir,
    )
    return train(cfg)


def test_a_run_stopped_right_after_an_epoch_end_resumes_exactly(data, tmp_path):
    whole = run(data, tmp_path / "whole")
    flag = tmp_path / "stopped"
    stop = f"+callbacks.stop={{_target_: tests.training.launch_helpers.InterruptOnce, step: 8, flag: {flag}, how: raise}}"  # noqa: E501
    with pytest.raises(Interrupted):
        run(data, tmp_path / "cut", stop)
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4  # not 8: the epoch-end state does not resume exactly
    resumed = run(data, tmp_path / "cut", stop, "resume=true")
    for key in ("best_val_accuracy", "test_accuracy", "steps"):
        assert resumed[key] == whole[key], key
    wa = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [(tmp_path / d / "csv" / "metrics.csv").read_text() for d in ("whole", "cut")]
    assert rows[0] == rows[1]  # the same steps logged, none skipped or repeated
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["steps"] == STEPS


def test_the_deferred_epoch_end_checkpoint_comes_after_the_next_first_step(data, tmp_path):
    flag = tmp_path / "stopped"
    stop = f"+callbacks.stop={{_target_: tests.training.launch_helpers.InterruptOnce, step: 10, flag: {flag}, how: raise}}"  # noqa: E501
    with pytest.raises(Interrupted):
        run(data, tmp_path / "cut", stop)
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 9  # after epoch 1 ended at step 8, at its first step's end
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
