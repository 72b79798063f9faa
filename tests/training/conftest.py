from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers import tiny
from tests.training.helpers import run_overrides, write_all, write_listops_release


@pytest.fixture(scope="session")
def lra_data(tmp_path_factory) -> Path:
    """Every task's files in its official layout (built once per test worker)."""
    return write_all(tmp_path_factory.mktemp("lra-data"))


class TinyRun(NamedTuple):
    run_dir: Path  # a finished run: results.json, checkpoints/{last,best}.ckpt
    overrides: list[str]  # its training overrides (without the run dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """A finished 2-step run of a tiny Mega-chunk on ListOps (built once per test worker)."""
    from mega_lra.training.config import compose
    from mega_lra.training.runner import train

    data = write_listops_release(
        tmp_path_factory.mktemp("tiny-data"), {"train": 8, "val": 4, "test": 4}
    )
    overrides = ["task=listops", "model=mega_chunk", *tiny("mega_chunk"), *run_overrides(data)]
    run_dir = tmp_path_factory.mktemp("tiny-run") / "run"
    train(compose(overrides, run_dir=run_dir))
    return TinyRun(run_dir, overrides)
