"""Loggers: Lightning's CSV logger made safe to resume, and helpers shared by the loggers.

Lightning's `CSVLogger` deletes an existing `metrics.csv` when it starts, so a resumed run would
lose its history. `ResumableCSVLogger(keep_rows=N)` keeps the first N data rows (the rows that
were on disk when the checkpoint being resumed was written; `LRAModule` records N in every
checkpoint), drops the later ones (the resumed run logs them again), and keeps a copy of the
file as it was, `metrics.pre-resume-<k>.csv`, so nothing written before is lost.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger


def count_csv_rows(path: Path) -> int:
    """Data rows (header excluded) of a CSV file; 0 when it does not exist."""
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


class ResumableCSVLogger(CSVLogger):
    def __init__(
        self,
        save_dir: str | Path,
        name: str = "csv",
        version: str | int | None = "",
        keep_rows: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir=str(save_dir), name=name, version=version, **kwargs)
        self.keep_rows = keep_rows

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    def data_rows(self) -> int:
        """Flush buffered metrics and count the data rows on disk."""
        if self._experiment is not None:
            self.save()
        return count_csv_rows(self.metrics_path)

    @property
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
            kept = rows if self.keep_rows is None else rows[: self.keep_rows]
        writer = super().experiment  # Lightning's writer deletes the old file here
        if header:
            with open(path, "w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=header)
                out.writeheader()
                out.writerows(kept)
            writer.metrics_keys = list(header)
        return writer
