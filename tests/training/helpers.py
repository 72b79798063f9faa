"""Shared by the training tests: official-layout data for every task, short-run overrides, and a
callback that slows a run down so a test can kill it mid-run."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from mega_lra.models.catalog import benchmark_tasks
from tests.tasks.conftest import (
    write_aan,
    write_cifar,
    write_imdb,
    write_listops,
    write_pathfinder,
    write_speech,
)

ROOT = Path(__file__).resolve().parents[2]
TASKS = [*benchmark_tasks("lra"), *benchmark_tasks("speech")]  # every task with real data
LISTOPS_ROWS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( [MIN 4 ) ( ( ( [SM 3 ) 5 ) ] ) ) 7 ) ] )", 4),
    ("( ( ( [MED 1 ) 3 ) ] )", 2),
    ("( ( ( ( [SM 9 ) 8 ) 7 ) ] )", 4),
    ("( ( [MIN 6 ) ] )", 6),
    ("( ( ( [MAX 1 ) 0 ) ] )", 1),
]


def write_listops_release(data_dir: Path, per_split: dict[str, int]) -> Path:
    """ListOps alone, in the extracted release's layout (lra_release/lra_release/listops-1000)."""
    write_listops(
        data_dir / "lra_release" / "lra_release" / "listops-1000", LISTOPS_ROWS, per_split
    )
    return data_dir


def write_all(data_dir: Path, listops_rows: dict[str, int] | None = None) -> Path:
    """Every task's raw files, in the layouts users download, under one data dir."""
    release = data_dir / "lra_release" / "lra_release"
    write_listops_release(data_dir, listops_rows or {"train": 12, "val": 6, "test": 6})
    write_aan(release / "tsv_data", {"train": 8, "eval": 4, "test": 4})
    write_pathfinder(release / "pathfinder32" / "curv_contour_length_14", n=20, side=32)
    write_pathfinder(release / "pathfinder128" / "curv_contour_length_14", n=10, side=128)
    write_imdb(data_dir, per_class=3)
    write_cifar(data_dir / "cifar-10-batches-py", per_batch=4)
    write_speech(data_dir / "speech_commands", per_word=7)
    return data_dir


def run_overrides(data_dir: Path, steps: int = 2, batch: int = 2) -> list[str]:
    """A short, quiet CPU run: no progress bars, CSV logging only."""
    return [
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={data_dir / '.cache'}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=null",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
        f"loader.batch_size={batch}",
        "loader.num_workers=0",
        "sched.warmup_steps=1",
        "effective_batch_size=null",
        "logger=csv",
        "progress=false",
    ]


class SlowDown(Callback):
    """Sleeps before every training batch (changes no number; gives a test time to kill)."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_start(self, *args) -> None:
        time.sleep(self.seconds)
