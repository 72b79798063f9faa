"""docs/models.md's "Adding a model", done as a user does it: the two files are taken from the
page, written into a copy of the repository, and the model is trained and tabulated through the
CLIs as subprocesses. Nothing else in the copy changes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_module

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "models.md"
SHORT_RUN = [
    "task.gen_rows={train: 48, val: 16, test: 16}",
    "trainer.max_steps=3",
    "trainer.max_epochs=null",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "loader.batch_size=8",
    "loader.num_workers=0",
    "sched.warmup_steps=1",
    "logger=csv",
    "progress=false",
]


def files_in_doc() -> dict[str, str]:
    """`path -> text` of every fenced block whose first line is a comment naming a file."""
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", DOC.read_text(), flags=re.S)
    files = {}
    for block in blocks:
        first = block.splitlines()[0]
        if re.fullmatch(r"# [\w/]+\.(py|yaml)", first):
            files[first[2:]] = block.split("\n", 1)[1]
    return files


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the repository's code and configs, plus the two files from the page."""
    root = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("mega_lra", "tasks", "conf"):
        shutil.copytree(ROOT / part, root / part, ignore=ignore)
    files = files_in_doc()
    assert sorted(files) == ["conf/model/conv.yaml", "mega_lra/models/conv.py"]
    for rel, text in files.items():
        assert not (root / rel).exists()  # new files, not edits
        (root / rel).write_text(text)
    return root


def run(tree: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI run from the copy, importing the copy's code."""
    return run_module(
        module, *args, cwd=tree, env={"PYTHONPATH": str(tree), "WANDB_MODE": "offline"}
    )


def test_the_documented_model_trains_and_reaches_the_table(tree):
    done = run(
        tree,
        "mega_lra.train",
        "task=listops_small",
        "model=conv",
        "model.kernel_size=5",
        *SHORT_RUN,
        "hydra.run.dir=runs/conv",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tree / "runs" / "conv" / "results.json").read_text())
    assert (results["task"], results["model"], results["steps"]) == ("listops_small", "conv", 3)
    assert results["model_info"] == {
        "backbone": "mega_lra.models.conv.ConvBackbone",
        "label": "Conv1d",
        "mixer": "conv1d",
        "kernel_size": 5,
    }
    # Mega's identity fields are absent for this model, not filled with Mega's defaults
    assert results["attention_activation"] is None and results["chunk_size"] is None
    # 64-wide embedding of 18 tokens, two Conv1d(64, 64, 5) + LayerNorms, head 64 -> 128 -> 10
    expected = 18 * 64 + 2 * (64 * 64 * 5 + 64 + 2 * 64) + (64 * 128 + 128) + 128 * 10
    assert results["params"] == expected

    table = run(tree, "mega_lra.table", "runs")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "Conv1d" in table.stdout


def test_a_key_the_backbone_does_not_take_is_one_clear_error(tree):
    done = run(tree, "mega_lra.train", "task=listops_small", "model=conv", "+model.kernel_sise=3")
    assert done.returncode == 2
    assert "model.kernel_sise: not a field of ConvBackbone" in done.stderr
    assert "Traceback" not in done.stderr
