"""`python -m mega_lra.eval`: overrides must name keys of the checkpoint's saved config."""

from __future__ import annotations

from mega_lra.training.checkpoint_files import load_checkpoint
from tests.helpers import run_module


def test_an_override_key_the_saved_config_lacks_is_an_error_naming_it(tiny_run, tmp_path):
    best = tiny_run.run_dir / "checkpoints" / "best.ckpt"
    saved = load_checkpoint(best)["mega_lra"]["config"]
    assert "batchsize" not in saved["loader"]
    proc = run_module(
        "mega_lra.eval", f"ckpt_path={best}", "loader.batchsize=3", f"out={tmp_path / 'e.json'}"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "loader.batchsize" in proc.stderr and "Traceback" not in proc.stderr
    assert all(key in proc.stderr for key in saved["loader"])  # what was expected instead
    assert not (tmp_path / "e.json").exists()

    top = run_module("mega_lra.eval", f"ckpt_path={best}", "no_such_group.x=1")
    assert top.returncode == 2 and "no_such_group.x" in top.stderr
    assert all(key in top.stderr for key in saved)
