"""Loggers: Lightning's CSV logger made safe to resume, and helpers shared by the loggers.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it starts, so a resumed run would
lose its history. `ResumableCSVLogger(resume_step=N)`, for a run resumed from a checkpoint at
optimiser step N, keeps the rows logged for steps before N (Lightning logs update k + 1, its
learning rate and the validation after it at `step` k) and drops the later ones, which the
resumed run logs again; it keeps a copy of the file as it was, `metrics.pre-resume-<k>.csv`, so
nothing written before is lost. It writes every row as it is logged (a killed run loses none),
except in the moment between a checkpoint and its step's training row (milliseconds). Rows are
appended; whenever the whole file is rewritten (a new column, a resume) or `hparams.yaml` is
written, it goes through `mega_lra.atomic_files`, so a kill never leaves a truncated log.

`WandbLogger` is Lightning's without the `anonymous` argument, which Lightning always passes and
wandb >= 0.2x deprecates (every run printed "The anonymous setting has no effect").
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import OmegaConf

from mega_lra.atomic_files import write_bytes, write_text


def _csv_text(fieldnames: Sequence[str], rows: list[dict[str, Any]]) -> str:
    """A header and rows as Lightning's writer writes them (csv's CRLF line ends)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(fieldnames))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class AtomicExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer whose whole-file writes are atomic, and which never deletes an
    existing `metrics.csv` (the logger decides what of it to keep)."""

    def _check_log_dir_exists(self) -> None:
        pass

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        write_bytes(self.metrics_file_path, _csv_text(fieldnames, rows).encode())

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        text = OmegaConf.to_yaml(OmegaConf.create(self.hparams))
        write_text(Path(self.log_dir) / self.NAME_HPARAMS_FILE, text)


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
            write_bytes(backup, path.read_bytes())
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                rows = list(reader)
            kept = [r for r in rows if self._before_resume(r)]
        self._fs.makedirs(self.root_dir, exist_ok=True)
        writer = AtomicExperimentWriter(log_dir=self.log_dir)
        if header:
            write_bytes(path, _csv_text(header, kept).encode())
            writer.metrics_keys = list(header)
        else:
            path.unlink(missing_ok=True)  # an empty file: the writer starts it with its header
        self._experiment = writer
        return writer


class WandbLogger(pl_loggers.WandbLogger):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
