"""Finding and reading run dirs: every `results.json` under some directories, each read into
its record (`record.py`), with the file's path and age; bad files and unfinished runs are kept
apart with the reason, so a caller can warn (`table`) or refuse (`table --strict`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mega_lra.results.record import FILE_NAME, Results, ResultsError, load_json

FINISHED = "finished"


@dataclass(frozen=True)
class Run:
    """One finished run: its record, where it was read and when that file was written. The
    record's fields read through: `run.task`, `run.chunk_size` (from `model_info`), ..."""

    path: Path  # the results.json
    record: Results
    mtime: float  # of results.json: the newest of duplicate seeds is kept

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "record":  # copy/pickle probe before init
            raise AttributeError(name)
        return getattr(self.record, name)


def read_run(path: Path) -> Run | str:
    """The run of one `results.json`, or its `status` when that is present and not finished.

    Raises ResultsError naming the file and the offending key."""
    data = load_json(path)
    status = data.get("status") if isinstance(data, dict) else None
    if status is not None and status != FINISHED:
        return str(status)
    record = Results.from_dict(data, path)
    return Run(Path(path), record, Path(path).stat().st_mtime)


def find_results(dirs: Iterable[Path]) -> list[Path]:
    """Every results.json under the directories (recursively), each file once, sorted."""
    found: dict[Path, Path] = {}
    for root in dirs:
        for here, subdirs, files in os.walk(root):
            subdirs.sort()
            if FILE_NAME in files:
                path = Path(here) / FILE_NAME
                found.setdefault(path.resolve(), path)
    return sorted(found.values())


@dataclass
class Loaded:
    runs: list[Run]
    errors: list[str]  # one message per bad results.json
    unfinished: list[tuple[Path, str]]  # (results.json, status)


def load_runs(dirs: Iterable[Path]) -> Loaded:
    loaded = Loaded([], [], [])
    for path in find_results(dirs):
        try:
            run = read_run(path)
        except ResultsError as err:
            loaded.errors.append(str(err))
            continue
        if isinstance(run, str):
            loaded.unfinished.append((path, run))
        else:
            loaded.runs.append(run)
    return loaded


def show(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_notes(loaded: Loaded, notes: list[str]) -> list[str]:
    """`notes` and what the reading left out: bad files (counted) and unfinished runs."""
    out = list(notes)
    if loaded.errors:
        out.append(
            f"{len(loaded.errors)} results.json skipped (unreadable, a missing key or a bad "
            "value; the warnings name them)."
        )
    if loaded.unfinished:
        out.append(
            "Not finished (status in results.json), left out: "
            + ", ".join(f"{show(p.parent)} ({s})" for p, s in loaded.unfinished)
            + "."
        )
    return out
