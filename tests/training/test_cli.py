"""The entry points as users run them: real subprocesses of `python -m mega_lra.train`,
`python -m mega_lra.eval`, including a run killed with SIGKILL and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mega_lra.atomic_files import torch_save
from tests.helpers import run_module, tiny
from tests.training.helpers import ROOT, run_overrides, write_all


def train_args(data_dir: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    return [
        "task=listops",
        "model=mega_chunk",
        *tiny("mega_chunk"),
        *run_overrides(data_dir, steps=steps),
        "model.dropout_prob=0.2",  # dropout draws random numbers: resume must restore the RNG
        "trainer.val_check_interval=5",  # validations mid-epoch, too
        "callbacks.last_checkpoint.every_n_train_steps=3",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory) -> Path:
    # 48 training rows at batch 2: 24 steps per epoch, so 60 steps cross two epoch ends
    return write_all(tmp_path_factory.mktemp("resume-data"), {"train": 48, "val": 6, "test": 6})


def csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(resume_data, tmp_path):
    steps = 60
    whole = tmp_path / "whole"
    done = run_module("mega_lra.train", *train_args(resume_data, whole, steps))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    slow = "+callbacks.slow={_target_: tests.training.helpers.SlowDown, seconds: 0.1}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mega_lra.train", *train_args(resume_data, killed, steps, slow)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["global_step"] >= 13:
            break
        time.sleep(0.05)
    time.sleep(0.25)  # somewhere after that checkpoint, mid-epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists()
    at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 13 <= at_kill < steps

    resumed = run_module("mega_lra.train", *train_args(resume_data, killed, steps, "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout

    a = json.loads((whole / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    for key in ("best_val_accuracy", "test_accuracy", "steps", "group", "params"):
        assert a[key] == b[key], key
    assert b["steps"] == steps
    wa = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bitwise the same weights
    # the metrics history is the uninterrupted one, and the file as it was at the kill is kept
    assert csv_rows(killed) == csv_rows(whole)
    assert (killed / "csv" / "metrics.pre-resume-1.csv").is_file()

    # resuming the finished run changes nothing
    stamp = {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file()}
    again = run_module("mega_lra.train", *train_args(resume_data, killed, steps, "resume=true"))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file()} == stamp


def test_train_and_eval_cli(lra_data, tmp_path):
    run = tmp_path / "run"
    done = run_module("mega_lra.train", *train_args(lra_data, run, 4))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert "best val accuracy" in done.stdout and str(run) in done.stdout
    assert (run / ".hydra" / "overrides.yaml").is_file()

    ev = run_module("mega_lra.eval", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "split=test")
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads(ev.stdout.strip().splitlines()[-1])
    assert metrics["accuracy"] == pytest.approx(results["test_accuracy"])
    assert metrics["rows"] == 6 and Path(metrics["written_to"]).is_file()

    # a second train into the same run dir is refused, exit 2, nothing touched
    before = (run / "results.json").read_bytes()
    again = run_module("mega_lra.train", *train_args(lra_data, run, 4))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert (run / "results.json").read_bytes() == before


def test_cli_errors_are_one_clear_message(lra_data, tmp_path):
    bad_model = run_module("mega_lra.train", "model=megaa", f"hydra.run.dir={tmp_path / 'a'}")
    assert bad_model.returncode != 0
    assert "mega_chunk" in bad_model.stderr and "transformer" in bad_model.stderr
    missing = run_module(
        "mega_lra.train",
        "task=pathfinder",
        f"paths.data_dir={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path / 'b'}",
        "logger=csv",
    )
    assert missing.returncode == 2
    assert "task.source=generate" in missing.stderr and "Traceback" not in missing.stderr
    ev = run_module("mega_lra.eval", f"ckpt_path={tmp_path / 'none.ckpt'}")
    assert ev.returncode == 2 and "no such checkpoint" in ev.stderr


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    path = tmp_path / "last.ckpt"
    torch_save({"step": 1, "w": torch.ones(3)}, path)
    child = (
        "import os, signal, torch\n"
        "from mega_lra.atomic_files import torch_save\n"
        "class Die:\n"
        "    def __reduce__(self):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"torch_save({{'w': torch.zeros(1 << 20), 'die': Die()}}, {str(path)!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
