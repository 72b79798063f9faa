"""Loggers: Lightning's CSV logger made safe to resume, and helpers shared by the loggers.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it starts, so a resumed run would
lose its history. `ResumableCSVLogger(resume_step=N)`, for a run resumed from a checkpoint at
optimiser step N, keeps the rows logged for steps before N (Lightning logs update k + 1, its
learning rate and the validation after it at `step` k) and drops the later ones, which the
resumed run logs again; it keeps a copy of the file as it was, `metrics.pre-resume-<k>.csv`, so
nothing written before is lost. It writes every row as it is logged (a killed run loses none),
except in the moment between a checkpoint and its step's training row (milliseconds).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ResumableCSVLogger(CSVLogger):
    def __init__(
        self,
        save_dir: str | Path,
        name: str = "csv",
        version: str | int | None = "",
        resume_step: int | None = None,
        flush_logs_every_n_steps: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            save_dir=str(save_dir),
            name=name,
            version=version,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
            **kwargs,
        )
        self.resume_step = resume_step

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    def _before_resume(self, row: dict[str, str]) -> bool:
        if self.resume_step is None:
            return True
        try:
            return int(float(row.get("step") or 0)) < self.resume_step
        except ValueError:
            return False

    @property
    @rank_zero_experiment  # under DDP only rank 0 touches the file (others get a dummy)
    def experiment(self):  # noqa: ANN201 - Lightning's writer type
        if self._experiment is not None:
            return self._experiment
        path = self.metrics_path
        header: list[str] = []
        kept: list[dict[str, str]] = []
        if path.is_file():
            k = 1
            while (backup := path.with_name(f"metrics.pre-resume-{k}.csv")).exists():
                k += 1
            shutil.copy2(path, backup)
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                rows = list(reader)
            kept = [r for r in rows if self._before_resume(r)]
        writer = super().experiment  # Lightning's writer deletes the old file here
        if header:
            with open(path, "w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=header)
                out.writeheader()
                out.writerows(kept)
            writer.metrics_keys = list(header)
        return writer
