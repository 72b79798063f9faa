"""What a newcomer's first `make train` (and an eval of its checkpoint) prints: no deprecation
or future warnings, no `weights_only` notes, no advertisement to install another logger."""

from __future__ import annotations

import os
import re

from tests.helpers import run_module

# a line with any of these is noise a newcomer should not have to read
NOISE = re.compile(
    r"DeprecationWarning|FutureWarning|deprecated|weights_only|litlogger|Tip:|warn", re.IGNORECASE
)


def run(module: str, *args: str) -> str:
    # a newcomer's shell: no W&B or warning-filter settings of ours
    unset = {k: None for k in os.environ if k.startswith(("WANDB_", "PYTHONWARNINGS"))}
    proc = run_module(module, *args, env=unset)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_a_first_training_run_and_its_eval_print_no_warnings(tmp_path):
    run_dir = tmp_path / "run"
    out = run(
        "mega_lra.train",
        "experiment=demo/listops",  # what `make train` runs, shortened
        "trainer.max_steps=2",
        "task.gen_rows={train: 96, val: 32, test: 32}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    out += run("mega_lra.eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}")
    noise = [line for line in out.splitlines() if NOISE.search(line)]
    assert noise == [], "\n".join(noise)
