"""Checkpoints are read without running anything from them: a checkpoint whose pickle would run
code is refused by `python -m mega_lra.eval`, by `resume=true` and by `ckpt_path=`, with one
error naming the file and the type, and the code does not run; real checkpoints still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mega_lra.training.checkpoint_files import (
    ALLOWED_GLOBALS,
    UnsafeCheckpointError,
    load_checkpoint,
)
from mega_lra.training.config import compose
from mega_lra.training.runner import train
from tests.helpers import run_module


class CreatesFile:
    """Unpickled, it creates `path`: a stand-in for what a malicious checkpoint could run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


OFFENDER = f"{open.__module__}.{open.__qualname__}"  # how the pickle names the call


def poisoned(real: Path, dest: Path, marker: Path) -> Path:
    """A copy of a real checkpoint with `CreatesFile(marker)` inside."""
    checkpoint = torch.load(real, weights_only=True)
    checkpoint["mega_lra"]["note"] = CreatesFile(marker)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dest)
    return dest


def test_the_payload_would_run_if_loaded_unsafely(tiny_run, tmp_path):
    """The refusals below mean something: loaded the unsafe way, the file does run code."""
    marker = tmp_path / "ran"
    path = poisoned(tiny_run.run_dir / "checkpoints" / "last.ckpt", tmp_path / "x.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_eval_refuses_a_checkpoint_that_would_run_code(tiny_run, tmp_path):
    marker = tmp_path / "ran"
    path = poisoned(tiny_run.run_dir / "checkpoints" / "best.ckpt", tmp_path / "x.ckpt", marker)
    proc = run_module("mega_lra.eval", f"ckpt_path={path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert str(path) in proc.stderr and OFFENDER in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_resume_refuses_a_last_checkpoint_that_would_run_code(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    (run / "results.json").unlink()  # an unfinished run, so resume=true reads last.ckpt
    marker = tmp_path / "ran"
    last = run / "checkpoints" / "last.ckpt"
    poisoned(tiny_run.run_dir / "checkpoints" / "last.ckpt", last, marker)
    before = last.read_bytes()
    cfg = compose([*tiny_run.overrides, "resume=true"], run_dir=run)
    with pytest.raises(UnsafeCheckpointError) as err:
        train(cfg)
    assert str(last) in str(err.value) and OFFENDER in str(err.value)
    assert not marker.exists()
    assert last.read_bytes() == before  # nothing written over it


def test_ckpt_path_refuses_a_checkpoint_that_would_run_code(tiny_run, tmp_path):
    marker = tmp_path / "ran"
    path = poisoned(tiny_run.run_dir / "checkpoints" / "last.ckpt", tmp_path / "x.ckpt", marker)
    cfg = compose([*tiny_run.overrides, f"ckpt_path={path}"], run_dir=tmp_path / "run")
    with pytest.raises(UnsafeCheckpointError) as err:
        train(cfg)  # Lightning reads it, through AtomicCheckpointIO.load_checkpoint
    assert str(path) in str(err.value) and OFFENDER in str(err.value)
    assert not marker.exists()


def test_a_real_checkpoint_holds_only_allowed_types(tiny_run):
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in ALLOWED_GLOBALS}
    for name in ("last.ckpt", "best.ckpt"):
        path = tiny_run.run_dir / "checkpoints" / name
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) <= allowed
        checkpoint = load_checkpoint(path)
        assert checkpoint["global_step"] == 2 and checkpoint["mega_lra"]["config"]


def test_a_real_checkpoint_loads_for_eval(tiny_run):
    best = tiny_run.run_dir / "checkpoints" / "best.ckpt"
    proc = run_module("mega_lra.eval", f"ckpt_path={best}", "loader.batch_size=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    finished = json.loads((tiny_run.run_dir / "results.json").read_text())
    assert result["step"] == 2
    assert result["accuracy"] == pytest.approx(finished["test_accuracy"])  # the same weights


def test_a_real_checkpoint_resumes_and_continues(tiny_run, tmp_path):
    last = tiny_run.run_dir / "checkpoints" / "last.ckpt"
    cfg = compose(
        [*tiny_run.overrides, f"ckpt_path={last}", "trainer.max_steps=4"], run_dir=tmp_path / "r"
    )
    results = train(cfg)
    assert results["steps"] == 4  # restored at step 2 (full state), then 2 more updates
    resumed = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 4
