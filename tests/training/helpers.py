"""Shared by the training tests: official-layout data for every task, tiny-model overrides, and
a callback that slows a run down so a test can kill it mid-run."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from tests.tasks.conftest import (
    write_aan,
    write_cifar,
    write_imdb,
    write_listops,
    write_pathfinder,
    write_speech,
)

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx", "sc_raw"]
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


def tiny(model: str) -> list[str]:
    """Overrides that shrink a model to a few hundred parameters (same code paths)."""
    if model == "transformer":
        return [
            "model.num_hidden_layers=1",
            "model.hidden_size=8",
            "model.num_attention_heads=2",
            "model.ffn_hidden_size=8",
            "model.attention_dropout_prob=0.0",  # lets CPU SDPA take its fused kernel at 16K
        ]
    out = [
        "model.num_hidden_layers=1",
        "model.hidden_size=8",
        "model.intermediate_size=16",
        "model.shared_representation_size=4",
        "model.ema_projection_size=2",
        "model.truncation=64",
    ]
    if model == "mega_chunk":
        out.append("model.chunk_size=16")
    return out


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
