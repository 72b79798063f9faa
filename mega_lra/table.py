"""The paper's tables from run dirs (`python -m mega_lra.table [RUNS_DIR ...]`, `make table`).

Reads every `results.json` under the given directories (default `runs/`, searched recursively, so
a Hydra sweep dir works as is) and prints one of the Mega paper's tables next to the paper's own
numbers (`mega_lra/paper_results.yaml`, the one place they live):

- `--table lra` (default): Table 2, rows = model, columns = the six LRA tasks + Avg;
- `--table attention`: Table 3, Mega on Text and Image x softmax / relu2 / laplace;
- `--table sc`: Table 4, SC-Raw, Mega base / big by experiment name;
- `--table ablation`: Figure 4's data, accuracy vs chunk size and vs EMA dimension h.

Each cell is the test accuracy (at the best-validation checkpoint) in percent: mean ± sample std
(ddof = 1) over seeds, with the number of seeds; one seed has no std ("± n/a"), a missing cell is
"—", never 0. Under each of our rows: the paper's value and the difference ours − paper.

How runs become cells (docs/reproduce.md says the same for users):
- Runs are grouped by `results.json`'s `group` (the config hash without seed and paths), never
  by folder. A cell (model x task) may hold several groups, e.g. two learning rates: the cell
  shows the group with the highest mean best-validation accuracy (a choice made on validation,
  not test; ties: more seeds), marked †, and a note lists every group with the config values
  that tell them apart (from each run's `config.yaml`) and its numbers.
- A paper cell only takes groups run in the paper's setting for it (`settings` in the paper
  file: chunk size, attention function, EMA dimension); others are left out with a note saying
  how they differ (they belong to Table 3 or Figure 4).
- Duplicate seeds in a group (a rerun) count once: the run whose `results.json` is newest is
  kept, and a note names the kept and the ignored run dirs.
- Runs on generated data (`data_source: generate`) are never compared with the paper: they are
  shown in a separate "Generated data" section without paper values.
- A `results.json` that cannot be read, lacks a required key or has a bad value is skipped with
  a warning naming the file and the key (`--strict`: an error, exit 2, no table). Runs whose
  `status` is present and not `finished` are left out with a note.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mega_lra.training.run_dir import flatten

PAPER_FILE = Path(__file__).with_name("paper_results.yaml")
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
TASK_LABELS = {
    "listops": "ListOps",
    "text": "Text",
    "retrieval": "Retrieval",
    "image": "Image",
    "pathfinder": "Pathfinder",
    "pathx": "Path-X",
    "sc_raw": "SC-Raw",
}
MODEL_LABELS = {"mega": "Mega", "mega_chunk": "Mega-chunk", "transformer": "Transformer"}
ACTIVATIONS = ("softmax", "relu2", "laplace")
TABLES = ("lra", "attention", "sc", "ablation")
FORMATS = ("markdown", "latex", "csv")
DATA_SOURCES = ("files", "hub", "generate")
FINISHED = "finished"
REQUIRED_KEYS = (
    "task",
    "model",
    "experiment",
    "seed",
    "group",
    "attention_activation",
    "chunk_size",
    "ema_projection_size",
    "normalization_type",
    "params",
    "best_val_accuracy",
    "test_accuracy",
    "val_is_test",
    "steps",
    "train_seconds",
    "git_sha",
    "data_source",
    "data_manifest",
)
# Fields that say what a group is; runs sharing a `group` hash must agree on them.
IDENTITY = (
    "task",
    "model",
    "experiment",
    "attention_activation",
    "chunk_size",
    "ema_projection_size",
    "normalization_type",
    "data_source",
)
MISSING = "—"


# --------------------------------------------------------------------------- reading runs
class ResultsError(ValueError):
    """A results.json that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Run:
    """One finished run: the fields of its `results.json` the tables use."""

    path: Path  # the results.json
    task: str
    model: str
    experiment: str | None
    seed: int
    group: str
    attention_activation: str | None
    chunk_size: int | None
    ema_projection_size: int | None
    normalization_type: str | None
    params: int | None
    best_val_accuracy: float | None  # fraction; None when no validation ran
    test_accuracy: float  # fraction
    val_is_test: bool
    steps: int
    data_source: str
    data_manifest: str | None
    git_sha: str | None
    mtime: float  # of results.json: the newest of duplicate seeds is kept

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def identity(self) -> tuple:
        return tuple(getattr(self, k) for k in IDENTITY)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


_CHECKS: dict[str, tuple[Any, str]] = {
    "task": (lambda v: isinstance(v, str) and v != "", "a task name"),
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "experiment": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "seed": (_is_int, "an integer"),
    "group": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "attention_activation": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "chunk_size": (lambda v: v is None or _is_int(v), "an integer (-1 = full) or null"),
    "ema_projection_size": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0"),
    "normalization_type": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "params": (lambda v: v is None or _is_int(v), "an integer"),
    "best_val_accuracy": (
        lambda v: v is None or (_is_num(v) and 0 <= v <= 1),
        "a fraction in [0, 1] or null",
    ),
    "test_accuracy": (lambda v: _is_num(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
    "val_is_test": (lambda v: isinstance(v, bool), "true or false"),
    "steps": (_is_int, "an integer"),
    "train_seconds": (lambda v: v is None or _is_num(v), "a number"),
    "git_sha": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "data_source": (lambda v: v in DATA_SOURCES, "one of files, hub, generate"),
    "data_manifest": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


def read_run(path: Path) -> Run | str:
    """The run of one `results.json`, or its `status` when that is present and not finished.

    Raises ResultsError naming the file and the offending key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: cannot read: {err}") from err
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from err
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    status = data.get("status")
    if status is not None and status != FINISHED:
        return str(status)
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ResultsError(f"{path}: missing required key '{key}'")
        check, expected = _CHECKS[key]
        if not check(data[key]):
            raise ResultsError(f"{path}: key '{key}' = {data[key]!r}, expected {expected}")
    fields = {k: data[k] for k in REQUIRED_KEYS if k in Run.__dataclass_fields__}
    fields["best_val_accuracy"] = (
        None if data["best_val_accuracy"] is None else float(data["best_val_accuracy"])
    )
    fields["test_accuracy"] = float(data["test_accuracy"])
    return Run(path=Path(path), mtime=Path(path).stat().st_mtime, **fields)


def find_results(dirs: Iterable[Path]) -> list[Path]:
    """Every results.json under the directories (recursively), each file once, sorted."""
    found: dict[Path, Path] = {}
    for root in dirs:
        for here, subdirs, files in os.walk(root):
            subdirs.sort()
            if "results.json" in files:
                path = Path(here) / "results.json"
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


# --------------------------------------------------------------------------- groups and cells
@dataclass(frozen=True)
class Stat:
    """Accuracies in percent, one per seed."""

    values: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample std (ddof = 1); None for one seed (no std, not 0)."""
        return statistics.stdev(self.values) if self.n > 1 else None


@dataclass
class Group:
    """The runs of one `group` hash: one run per seed (duplicates in `dropped`)."""

    id: str
    runs: list[Run]
    dropped: list[Run] = field(default_factory=list)

    @property
    def ref(self) -> Run:
        return self.runs[0]

    @property
    def test(self) -> Stat:
        return Stat(
            tuple(100 * r.test_accuracy for r in self.runs), tuple(r.seed for r in self.runs)
        )

    @property
    def val_mean(self) -> float | None:
        vals = [100 * r.best_val_accuracy for r in self.runs if r.best_val_accuracy is not None]
        return statistics.fmean(vals) if vals else None

    @property
    def generated(self) -> bool:
        return self.ref.data_source == "generate"

    def where(self) -> str:
        return f"{_label(self.ref.model, MODEL_LABELS)} / {_label(self.ref.task, TASK_LABELS)}"


def _label(key: str, labels: dict[str, str]) -> str:
    return labels.get(key, key)


def _show(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def group_runs(runs: Iterable[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by `group`; one run per seed (the newest results.json); notes on what was
    merged or dropped."""
    notes: list[str] = []
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.group, run.identity()), []).append(run)
    identities: dict[str, list[tuple]] = {}
    for gid, identity in by_key:
        identities.setdefault(gid, []).append(identity)
    for gid, seen in sorted(identities.items()):
        if len(seen) > 1:
            differ = [k for i, k in enumerate(IDENTITY) if len({s[i] for s in seen}) > 1]
            notes.append(
                f"group {gid[:8]} holds runs that disagree on {', '.join(differ)}: kept apart "
                "(the group hash should cover them; check the training side)."
            )
    groups = []
    for (gid, _), members in sorted(by_key.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        by_seed: dict[int, list[Run]] = {}
        for run in members:
            by_seed.setdefault(run.seed, []).append(run)
        kept, dropped = [], []
        for seed in sorted(by_seed):
            same = sorted(by_seed[seed], key=lambda r: (r.mtime, str(r.path)), reverse=True)
            kept.append(same[0])
            dropped += same[1:]
            if len(same) > 1:
                notes.append(
                    f"{_label(same[0].model, MODEL_LABELS)} / {_label(same[0].task, TASK_LABELS)}"
                    f", group {gid[:8]}, seed {seed}: {len(same)} runs, counted once: "
                    f"{_show(same[0].run_dir)} (newest results.json); not counted: "
                    + ", ".join(_show(r.run_dir) for r in same[1:])
                    + "."
                )
        group = Group(gid, kept, dropped)
        manifests = sorted({str(r.data_manifest) for r in kept})
        if len(manifests) > 1:
            notes.append(
                f"{group.where()}, group {gid[:8]}: its seeds ran on different data "
                f"(data_manifest {', '.join(m[:12] for m in manifests)})."
            )
        groups.append(group)
    return groups, notes


@dataclass
class Cell:
    """Our number for one table cell: the chosen group, and every candidate (chosen first)."""

    candidates: list[Group]

    @property
    def group(self) -> Group:
        return self.candidates[0]

    @property
    def stat(self) -> Stat:
        return self.group.test


def choose(groups: Sequence[Group]) -> Cell | None:
    """The group with the highest mean best-validation accuracy first (ties: more seeds, then
    the group id); None without groups."""
    if not groups:
        return None

    def rank(g: Group) -> tuple:
        val = g.val_mean
        return (val is None, -(val or 0.0), -len(g.runs), g.id)

    return Cell(sorted(groups, key=rank))


IGNORED_CONFIG = ("seed", "paths", "hydra")


def _config(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    flat = flatten(data)
    return {
        k: v
        for k, v in flat.items()
        if k.split(".")[0] not in IGNORED_CONFIG
        and not k.endswith(("_dir", ".dir", "ckpt_path", "save_dir"))
    }


def describe(groups: Sequence[Group], limit: int = 5) -> dict[str, str]:
    """For each group: its short id and the config values that set it apart from the others
    (from `config.yaml`; from results.json's fields when a config is missing)."""
    configs = {g.id: _config(g.ref.run_dir) for g in groups}
    if all(c is not None for c in configs.values()):
        flats = configs
    else:
        flats = {g.id: {k: getattr(g.ref, k) for k in IDENTITY} for g in groups}
    keys = sorted({k for f in flats.values() for k in f})
    differ = [k for k in keys if len({repr(f.get(k, "<absent>")) for f in flats.values()}) > 1]
    out = {}
    for g in groups:
        parts = [f"{k}={flats[g.id].get(k, '<absent>')}" for k in differ[:limit]]
        if len(differ) > limit:
            parts.append(f"+{len(differ) - limit} more")
        out[g.id] = f"group {g.id[:8]}" + (f" ({', '.join(parts)})" if parts else "")
    return out


# --------------------------------------------------------------------------- the paper's numbers
@dataclass(frozen=True)
class PaperValue:
    value: float | None  # percent; None = ✗ (the model failed; no number)
    source: str  # e.g. "Table 2, row Mega, column ListOps"
    approximate: bool = False


@dataclass(frozen=True)
class PaperPoint:
    """A Figure 4 reference point."""

    task: str
    x: int
    ref: PaperValue


@dataclass(frozen=True)
class Paper:
    citation: str
    lra: dict[str, dict[str, PaperValue]]  # model -> task -> value
    lra_avg: dict[str, PaperValue]  # model -> the paper's Avg
    lra_rows: dict[str, str]  # model -> the paper's row name (XFM‡ for the Transformer)
    attention_model: str
    attention: dict[str, dict[str, PaperValue]]  # task -> activation -> value
    sc: dict[str, dict[str, Any]]  # key -> {experiment, row, params, ref}
    chunk_points: tuple[PaperPoint, ...]
    ema_points: tuple[PaperPoint, ...]
    ema_values: tuple[int, ...]
    ema_note: str
    settings: dict[str, Any]

    def full(self, task: str, chunk: int | None) -> int | None:
        """-1 for full attention: chunk -1, or a chunk at least as long as the task's input."""
        length = self.settings["length"].get(task)
        if chunk is not None and length is not None and chunk >= length:
            return -1
        return chunk

    def mismatch(self, run: Run, table: str, fields: Sequence[str]) -> list[str]:
        """How a run differs from the paper's setting for its (model, task) on `fields`."""
        s = self.settings
        want: dict[str, Any] = {
            "attention_activation": s["attention_activation"].get(run.task),
            "ema_projection_size": s["ema_projection_size"],
            "chunk_size": s["chunk_size"].get(run.model, {}).get(run.task),
        }
        have = {
            "attention_activation": run.attention_activation,
            "ema_projection_size": run.ema_projection_size,
            "chunk_size": self.full(run.task, run.chunk_size),
        }
        return [
            f"{k}={have[k]} ({table}: {want[k]})"
            for k in fields
            if want[k] is not None and have[k] != want[k]
        ]


def _paper_error(path: Path, key: str, expected: str) -> ValueError:
    return ValueError(f"{path}: key '{key}': expected {expected}")


def load_paper(path: Path = PAPER_FILE) -> Paper:
    """The paper's reference numbers, each with its source (table, row, column)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the paper's numbers: {err}") from err

    def num(v: Any, key: str) -> float | None:
        if v is not None and not _is_num(v):
            raise _paper_error(path, key, f"a number or null (✗), got {v!r}")
        return None if v is None else float(v)

    try:
        lra, lra_avg, lra_rows = {}, {}, {}
        src = raw["lra"]["source"]
        for model, row in raw["lra"]["rows"].items():
            lra_rows[model] = row["row"]
            lra[model] = {
                task: PaperValue(
                    num(v, f"lra.rows.{model}.accuracy.{task}"),
                    f"{src}, row {row['row']}, column {_label(task, TASK_LABELS)}",
                )
                for task, v in row["accuracy"].items()
            }
            lra_avg[model] = PaperValue(
                num(row["avg"], f"lra.rows.{model}.avg"), f"{src}, row {row['row']}, column Avg"
            )
        src = raw["attention"]["source"]
        attention = {
            task: {
                act: PaperValue(
                    num(v, f"attention.rows.{task}.accuracy.{act}"),
                    f"{src}, row {row['row']}, column {act}",
                )
                for act, v in row["accuracy"].items()
            }
            for task, row in raw["attention"]["rows"].items()
        }
        src = raw["sc_raw"]["source"]
        sc = {
            key: {
                "experiment": row["experiment"],
                "row": row["row"],
                "params": str(row["params"]),
                "ref": PaperValue(
                    num(row["accuracy"], f"sc_raw.rows.{key}.accuracy"),
                    f"{src}, row {row['row']}, column Accuracy",
                ),
            }
            for key, row in raw["sc_raw"]["rows"].items()
        }
        abl = raw["ablation"]

        def points(axis: str) -> tuple[PaperPoint, ...]:
            return tuple(
                PaperPoint(
                    p["task"],
                    int(p["x"]),
                    PaperValue(
                        num(p["accuracy"], f"ablation.{axis}.points.accuracy"),
                        f"{abl['source']}, {p['row']}",
                        bool(p.get("approximate", False)),
                    ),
                )
                for p in abl[axis]["points"]
            )

        return Paper(
            citation=raw["paper"],
            lra=lra,
            lra_avg=lra_avg,
            lra_rows=lra_rows,
            attention_model=raw["attention"]["model"],
            attention=attention,
            sc=sc,
            chunk_points=points("chunk_size"),
            ema_points=points("ema_projection_size"),
            ema_values=tuple(int(v) for v in abl["ema_projection_size"]["values"]),
            ema_note=f"{abl['source']}: {abl['ema_projection_size']['note']}",
            settings=raw["settings"],
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: malformed paper file, at {err!r}") from err


# --------------------------------------------------------------------------- tables as data
@dataclass
class Average:
    value: float | None  # mean of the cell means over `columns`
    columns: tuple[str, ...]  # the columns averaged
    expected: tuple[str, ...]  # the columns a complete row has

    @property
    def partial(self) -> bool:
        return len(self.columns) < len(self.expected)


@dataclass
class Row:
    key: str
    label: str
    cells: dict[str, Cell]  # column -> ours (absent = no run)
    paper: dict[str, PaperValue] = field(default_factory=dict)  # column -> the paper's
    paper_label: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # extra columns (ours)
    paper_extra: dict[str, str] = field(default_factory=dict)
    avg: Average | None = None
    paper_avg: PaperValue | None = None


@dataclass
class Grid:
    """One printed table."""

    name: str  # lra, attention, sc, ablation_chunk, ablation_ema
    title: str
    corner: str  # header of the label column
    columns: list[tuple[str, str]]  # (key, header)
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    generated: bool = False
    extra_columns: list[tuple[str, str]] = field(default_factory=list)
    has_avg: bool = False


LEGEND = (
    "Cells: test accuracy (%) at the best-validation checkpoint, mean ± sample std (ddof = 1) "
    "over seeds, n = seeds (± n/a: one seed, no std); — = no run. Δ = ours − paper in "
    "percentage points, from the unrounded mean."
)
GENERATED_TITLE = "Generated data (data_source = generate): NOT comparable with the paper"


def _cell_notes(where: str, cell: Cell, label: str, notes: list[str]) -> None:
    """A note when a cell had several candidate groups: which one is shown, and why."""
    if len(cell.candidates) < 2:
        return
    names = describe(cell.candidates)
    chosen, others = cell.group, cell.candidates[1:]
    val = chosen.val_mean
    text = (
        f"† {where}: {len(cell.candidates)} configurations; shown: {names[chosen.id]}, the "
        f"highest mean validation accuracy ({_num(val)}, n={len(chosen.runs)}). Not shown: "
        + "; ".join(
            f"{names[g.id]}: val {_num(g.val_mean)}, test {fmt_stat(g.test)}" for g in others
        )
        + "."
    )
    if chosen.ref.val_is_test:
        text += f" ({label} validates on its test split: this choice looks at test.)"
    notes.append(text)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _left_out(where: str, groups: Sequence[Group], reason: str, notes: list[str]) -> None:
    if groups:
        runs = [_show(r.run_dir) for g in groups for r in g.runs]
        notes.append(f"{where}: {len(runs)} run(s) left out, {reason}: {', '.join(runs)}.")


def _candidates(
    groups: Sequence[Group],
    paper: Paper | None,
    table: str,
    fields: Sequence[str],
    where: str,
    notes: list[str],
) -> list[Group]:
    """The groups that match the paper's setting on `fields` (all of them when `paper` is None:
    no comparison); one note on those left out, by how they differ."""
    if paper is None:
        return list(groups)
    keep, away = [], {}
    for g in groups:
        diff = paper.mismatch(g.ref, table, fields)
        if diff:
            away.setdefault(", ".join(diff), []).append(len(g.runs))
        else:
            keep.append(g)
    if away:
        notes.append(
            f"{where}: left out, a setting differs from {table}'s (see --table attention or "
            "ablation): " + "; ".join(f"{diff}: {sum(n)} run(s)" for diff, n in away.items()) + "."
        )
    return keep


def _by(groups: Iterable[Group], *keys: str) -> dict[tuple, list[Group]]:
    out: dict[tuple, list[Group]] = {}
    for g in groups:
        out.setdefault(tuple(getattr(g.ref, k) for k in keys), []).append(g)
    return out


def _model_order(models: Iterable[str]) -> list[str]:
    known = [m for m in MODEL_LABELS if m in models]
    return known + sorted(set(models) - set(known))


def _task_rank(task: str) -> tuple[int, str]:
    order = (*LRA_TASKS, "sc_raw")
    return (order.index(task) if task in order else len(order), task)


def _task_order(tasks: Iterable[str]) -> list[str]:
    return sorted(set(tasks), key=_task_rank)


def build_lra(groups: Sequence[Group], paper: Paper, compare: bool = True) -> Grid:
    """Table 2. `compare=False` (generated data): no paper values, columns = the tasks present."""
    notes: list[str] = []
    by_cell = _by(groups, "model", "task")
    ref = paper if compare else None
    if not compare:
        tasks = _task_order({g.ref.task for g in groups})
    else:
        tasks = list(LRA_TASKS)
        outside: dict[str, int] = {}
        for g in groups:
            if g.ref.task not in LRA_TASKS:
                outside[g.ref.task] = outside.get(g.ref.task, 0) + len(g.runs)
        if outside:
            notes.append(
                "Runs on tasks outside Table 2 (not shown): "
                + ", ".join(f"{t} ({n})" for t, n in sorted(outside.items()))
                + "."
            )
    rows = []
    for model in _model_order({g.ref.model for g in groups if g.ref.task in tasks}):
        label = _label(model, MODEL_LABELS)
        cells = {}
        for task in tasks:
            where = f"{label} / {_label(task, TASK_LABELS)}"
            cand = by_cell.get((model, task), [])
            if model in paper.settings["chunk_size"]:
                fields = ("chunk_size", "attention_activation", "ema_projection_size")
                cand = _candidates(cand, ref, "Table 2", fields, where, notes)
            cell = choose(cand)
            if cell is not None:
                cells[task] = cell
                _cell_notes(where, cell, _label(task, TASK_LABELS), notes)
        row = Row(model, label, cells)
        if compare:
            row.paper = dict(paper.lra.get(model, {}))
            name = paper.lra_rows.get(model)
            row.paper_label = "Table 2" if name in (None, label) else f"{name}, Table 2"
            row.paper_avg = paper.lra_avg.get(model)
            expected = tuple(
                t for t in tasks if row.paper.get(t, PaperValue(0, "")).value is not None
            )
            present = tuple(t for t in expected if t in cells)
            value = statistics.fmean(cells[t].stat.mean for t in present) if present else None
            row.avg = Average(value, present, expected)
        rows.append(row)
    if compare:
        notes.insert(
            0,
            "Avg = mean of the task means; 'partial k/m' = over the k tasks present only, not "
            "compared with the paper. The Transformer is compared with XFM‡ (the authors' "
            "re-run), whose Avg is over the five tasks without ✗.",
        )
    return Grid(
        "lra",
        "LRA accuracy (%), ours vs the paper's Table 2",
        "Model",
        [(t, _label(t, TASK_LABELS)) for t in tasks],
        rows,
        notes,
        generated=not compare,
        has_avg=compare,
    )


def build_attention(groups: Sequence[Group], paper: Paper, compare: bool = True) -> Grid:
    """Table 3: Mega (full attention) on Text and Image, one column per attention function.
    `compare=False`: no paper values, no setting filter."""
    notes: list[str] = []
    model = paper.attention_model
    ref = paper if compare else None
    mine = [g for g in groups if g.ref.model == model]
    tasks = list(paper.attention)
    acts = list(ACTIVATIONS) + sorted(
        {str(g.ref.attention_activation) for g in mine if g.ref.task in tasks} - set(ACTIVATIONS)
    )
    by_cell = _by(mine, "task", "attention_activation")
    rows = []
    for task in tasks:
        tlabel = _label(task, TASK_LABELS)
        cells = {}
        for act in acts:
            where = f"{_label(model, MODEL_LABELS)} / {tlabel} / {act}"
            fields = ("chunk_size", "ema_projection_size")
            cand = _candidates(by_cell.get((task, act), []), ref, "Table 3", fields, where, notes)
            cell = choose(cand)
            if cell is not None:
                cells[act] = cell
                _cell_notes(where, cell, tlabel, notes)
        if not cells:
            continue
        row = Row(task, f"{_label(model, MODEL_LABELS)}, {tlabel}", cells)
        if compare:
            row.paper = dict(paper.attention[task])
            row.paper_label = "Table 3"
        rows.append(row)
    return Grid(
        "attention",
        "Attention functions (%), ours vs the paper's Table 3 (Mega, full attention)",
        "Task",
        [(a, a) for a in acts],
        rows,
        notes,
        generated=not compare,
    )


def _params(g: Group) -> str:
    values = sorted({r.params for r in g.runs if r.params is not None})
    if not values:
        return "n/a"
    text = [f"{v / 1000:.0f}K" if v < 10**6 else f"{v / 1e6:.2f}M" for v in values]
    return "-".join(dict.fromkeys(text))


def build_sc(groups: Sequence[Group], paper: Paper, compare: bool = True) -> Grid:
    """Table 4: SC-Raw, Mega base / big, chosen by experiment name."""
    notes: list[str] = []
    by_exp = _by(groups, "experiment")
    rows = []
    for key, ref in paper.sc.items():
        cell = choose(by_exp.pop((ref["experiment"],), []))
        if cell is None:
            continue
        _cell_notes(ref["row"], cell, "SC-Raw", notes)
        row = Row(key, ref["row"], {"sc_raw": cell}, extra={"params": _params(cell.group)})
        if compare:
            row.paper = {"sc_raw": ref["ref"]}
            row.paper_label = "Table 4"
            row.paper_extra = {"params": ref["params"]}
        rows.append(row)
    rest = [g for gs in by_exp.values() for g in gs if g.ref.task == "sc_raw"]
    wanted = " or ".join(r["experiment"] for r in paper.sc.values())
    _left_out("SC-Raw", rest, f"not run as experiment {wanted}", notes)
    return Grid(
        "sc",
        "SC-Raw accuracy (%), ours vs the paper's Table 4",
        "Model",
        [("sc_raw", "SC-Raw")],
        rows,
        notes,
        generated=not compare,
        extra_columns=[("params", "Params")],
    )


@dataclass
class Series:
    """One line of an ablation: the groups of one task and fixed setting, by x."""

    task: str
    label: str
    cells: dict[int, Cell]  # x -> ours
    paper: dict[int, PaperValue]  # x -> the paper's (Figure 4; approximate)


AXES = {
    "chunk_size": "attention chunk size c (full = -1)",
    "ema_projection_size": "EMA dimension h",
}
SHORT = {
    "attention_activation": "attn",
    "chunk_size": "c",
    "ema_projection_size": "h",
    "normalization_type": "norm",
}


def x_label(x: int, axis: str) -> str:
    return "full" if axis == "chunk_size" and x == -1 else str(x)


def ablation_series(
    groups: Sequence[Group], paper: Paper, axis: str, compare: bool = True
) -> tuple[list[Series], list[str]]:
    """Figure 4's data along `axis` (chunk_size or ema_projection_size).

    Mega and Mega-chunk groups of one task that agree on the other settings (attention
    function, the other axis, normalisation) form a series; x = the axis value (a chunk as long
    as the input counts as full, -1). A series holding only the paper's default on the axis
    (h = 16; c = full or the recipe's chunk) is no ablation: left out, with a note. Paper
    points (`compare`) attach to a series run in the paper's setting (its attention function,
    and h = 16 on the chunk axis)."""
    notes: list[str] = []
    settings = paper.settings
    held = [k for k in SHORT if k != axis]
    series_of: dict[tuple, dict[int, list[Group]]] = {}
    for g in groups:
        run = g.ref
        if run.model not in ("mega", "mega_chunk") or getattr(run, axis) is None:
            continue
        values = {k: getattr(run, k) for k in SHORT}
        values["chunk_size"] = paper.full(run.task, run.chunk_size)
        key = (run.task, *(values[k] for k in held))
        series_of.setdefault(key, {}).setdefault(values[axis], []).append(g)
    out, only_default = [], []
    for key in sorted(series_of, key=lambda k: (_task_rank(k[0]), str(k))):
        task, fixed = key[0], dict(zip(held, key[1:]))
        by_x = series_of[key]
        if axis == "chunk_size":
            defaults = {-1, settings["chunk_size"]["mega_chunk"].get(task, 128)}
        else:
            defaults = {settings["ema_projection_size"]}
        tag = ", ".join(f"{SHORT[k]}={x_label(v, k)}" for k, v in fixed.items())
        label = f"{_label(task, TASK_LABELS)} ({tag})"
        if set(by_x) <= defaults:
            only_default.append(label)
            continue
        cells = {}
        for x in sorted(by_x, key=lambda x: (x == -1, x)):  # full attention last
            cells[x] = choose(by_x[x])
            where = f"{label}, {SHORT[axis]}={x_label(x, axis)}"
            _cell_notes(where, cells[x], _label(task, TASK_LABELS), notes)
        refs: dict[int, PaperValue] = {}
        in_setting = (
            fixed["attention_activation"] == settings["attention_activation"].get(task)
            and fixed.get("ema_projection_size", settings["ema_projection_size"])
            == (settings["ema_projection_size"])
        )
        if compare and in_setting:
            points = paper.chunk_points if axis == "chunk_size" else paper.ema_points
            refs = {p.x: p.ref for p in points if p.task == task}
        out.append(Series(task, label, cells, refs))
    if only_default:
        notes.append(
            f"{len(only_default)} series hold only the paper's default {AXES[axis]} (no "
            "ablation; "
            + ("c = full or the recipe's chunk" if axis == "chunk_size" else "h = 16")
            + "): not shown."
        )
    return out, notes


def build_ablation(groups: Sequence[Group], paper: Paper, compare: bool = True) -> list[Grid]:
    grids = []
    for axis in AXES:
        series, notes = ablation_series(groups, paper, axis, compare)
        xs = {x for s in series for x in (*s.cells, *s.paper)}
        if axis == "ema_projection_size" and compare:
            xs |= set(paper.ema_values)
            notes.insert(0, paper.ema_note)
        ordered = sorted(xs, key=lambda x: (x == -1, x))
        rows = []
        for s in series:
            row = Row(s.label, s.label, {str(x): c for x, c in s.cells.items()})
            row.paper = {str(x): v for x, v in s.paper.items()}
            row.paper_label = "Figure 4, approximate" if s.paper else ""
            rows.append(row)
        grids.append(
            Grid(
                f"ablation_{'chunk' if axis == 'chunk_size' else 'ema'}",
                f"Accuracy (%) vs {AXES[axis]}, Mega / Mega-chunk (paper: Figure 4)",
                "Task (fixed settings)",
                [(str(x), x_label(x, axis)) for x in ordered],
                rows,
                notes,
                generated=not compare,
            )
        )
    return grids


BUILDERS = {
    "lra": lambda gs, p, c: [build_lra(gs, p, c)],
    "attention": lambda gs, p, c: [build_attention(gs, p, c)],
    "sc": lambda gs, p, c: [build_sc(gs, p, c)],
    "ablation": build_ablation,
}


def build(table: str, groups: Sequence[Group], paper: Paper) -> list[Grid]:
    """The grids of one `--table`: the paper comparison on real data, then (if any) the same
    table on generated data, without paper values, in a section of its own."""
    real = [g for g in groups if not g.generated]
    gen = [g for g in groups if g.generated]
    grids = BUILDERS[table](real, paper, True)
    gen_grids = [g for g in BUILDERS[table](gen, paper, False) if g.rows] if gen else []
    for grid in gen_grids:
        grid.title = f"{GENERATED_TITLE}. {grid.title.split(',')[0]}"
    if gen_grids:
        shown = sorted(
            {
                r.run_dir
                for grid in gen_grids
                for row in grid.rows
                for c in row.cells.values()
                for r in c.group.runs
            }
        )
        grids[0].notes.append(
            f"{sum(len(g.runs) for g in gen)} run(s) on generated data are not compared with "
            "the paper; the ones that fit this table are under 'Generated data' below."
        )
        gen_grids[0].notes.append(
            "Runs on generated data shown: " + ", ".join(_show(d) for d in shown) + "."
        )
    return grids + gen_grids


# --------------------------------------------------------------------------- rendering
def fmt_stat(stat: Stat) -> str:
    std = "n/a" if stat.std is None else f"{stat.std:.2f}"
    return f"{stat.mean:.2f} ± {std} (n={stat.n})"


def _fmt_paper(ref: PaperValue | None) -> str:
    if ref is None:
        return MISSING
    if ref.value is None:
        return "✗"
    return f"≈{ref.value:g}" if ref.approximate else f"{ref.value:.2f}"


def _diff(mean: float | None, ref: PaperValue | None) -> float | None:
    if mean is None or ref is None or ref.value is None:
        return None
    return mean - ref.value


def _fmt_diff(d: float | None, approximate: bool = False) -> str:
    return MISSING if d is None else ("≈" if approximate else "") + f"{d:+.2f}"


def _avg_text(avg: Average | None) -> str:
    if avg is None or avg.value is None:
        return MISSING
    text = f"{avg.value:.2f}"
    if avg.partial:
        text += f" (partial {len(avg.columns)}/{len(avg.expected)})"
    return text


def _lines(grid: Grid) -> tuple[list[str], list[list[str]]]:
    """Header and body rows as plain strings (ours / paper / Δ per row)."""
    header = [grid.corner] + [h for _, h in grid.extra_columns] + [h for _, h in grid.columns]
    if grid.has_avg:
        header.append("Avg")
    body = []
    for row in grid.rows:
        ours = [row.label + (" (ours)" if row.paper else "")]
        ours += [row.extra.get(k, "") for k, _ in grid.extra_columns]
        for key, _ in grid.columns:
            cell = row.cells.get(key)
            text = MISSING if cell is None else fmt_stat(cell.stat)
            if cell is not None and len(cell.candidates) > 1:
                text += " †"
            ours.append(text)
        if grid.has_avg:
            ours.append(_avg_text(row.avg))
        body.append(ours)
        if not row.paper:
            continue
        ref = [f"{row.label} (paper: {row.paper_label})" if row.paper_label else "paper"]
        ref += [row.paper_extra.get(k, "") for k, _ in grid.extra_columns]
        ref += [_fmt_paper(row.paper.get(k)) for k, _ in grid.columns]
        delta = ["Δ ours − paper"] + ["" for _ in grid.extra_columns]
        for key, _ in grid.columns:
            cell, p = row.cells.get(key), row.paper.get(key)
            d = _diff(cell.stat.mean if cell else None, p)
            delta.append(_fmt_diff(d, bool(p and p.approximate)))
        if grid.has_avg:
            ref.append(_fmt_paper(row.paper_avg))
            avg = row.avg
            ok = avg is not None and not avg.partial and avg.value is not None
            delta.append(_fmt_diff(_diff(avg.value, row.paper_avg) if ok else None))
        body += [ref, delta]
    return header, body


def render_markdown(grids: Sequence[Grid], notes: Sequence[str]) -> str:
    out = []
    for grid in grids:
        header, body = _lines(grid)
        out.append(f"### {grid.title}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" + "---:|" * (len(header) - 1))
        out += ["| " + " | ".join(line) + " |" for line in body]
        if not body:
            out.append("| (no runs) |" + " |" * (len(header) - 1))
        out.append("")
        out += [f"- {n}" for n in (LEGEND, *grid.notes)]
        out.append("")
    if notes:
        out.append("### Notes on the runs read\n")
        out += [f"- {n}" for n in notes]
        out.append("")
    return "\n".join(out) + "\n"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$"}
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "—": "--",
    "✗": r"$\times$",
    "≈": r"$\approx$",
    "Δ": r"$\Delta$",
    "†": r"$^\dagger$",
    "−": "$-$",
    "‡": r"$^\ddagger$",
}


def _latex(text: str) -> str:
    for a, b in {**_LATEX_ESCAPES, **_LATEX_SYMBOLS}.items():
        text = text.replace(a, b)
    return re.sub(r"(?<![\w$])([+-]\d+\.\d+)", r"$\1$", text)  # signed numbers in math mode


def render_latex(grids: Sequence[Grid], notes: Sequence[str]) -> str:
    out = ["% Generated by python -m mega_lra.table; needs \\usepackage{booktabs}."]
    for grid in grids:
        header, body = _lines(grid)
        out.append(f"% {_latex(grid.title)}")
        out.append(r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(_latex(h) for h in header) + r" \\")
        out.append(r"\midrule")
        for line in body:
            out.append(" & ".join(_latex(c) for c in line) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out += [f"% {n}" for n in (LEGEND, *grid.notes)]
        out.append("")
    out += [f"% {n}" for n in notes]
    return "\n".join(out) + "\n"


CSV_FIELDS = (
    "table",
    "data",
    "key",
    "row",
    "column",
    "mean",
    "std",
    "n",
    "seeds",
    "group",
    "groups_considered",
    "params",
    "paper",
    "paper_failed",
    "paper_approximate",
    "paper_source",
    "diff",
    "partial",
)


def render_csv(grids: Sequence[Grid]) -> str:
    """One line per (table, row, column) with ours and the paper's numbers, full precision."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for grid in grids:
        for row in grid.rows:
            base = {"table": grid.name, "data": "generated" if grid.generated else "real"}
            base.update(key=row.key, row=row.label)
            for key, header in grid.columns:
                cell, ref = row.cells.get(key), row.paper.get(key)
                if cell is None and ref is None:
                    continue
                line = {**base, "column": header, **_csv_ref(ref)}
                if cell is not None:
                    stat = cell.stat
                    line.update(
                        mean=repr(stat.mean),
                        std="" if stat.std is None else repr(stat.std),
                        n=stat.n,
                        seeds=";".join(map(str, stat.seeds)),
                        group=cell.group.id,
                        groups_considered=len(cell.candidates),
                        params="" if cell.group.ref.params is None else cell.group.ref.params,
                    )
                    d = _diff(stat.mean, ref)
                    line["diff"] = "" if d is None else repr(d)
                writer.writerow(line)
            if grid.has_avg and row.avg is not None:
                avg = row.avg
                line = {**base, "column": "Avg", **_csv_ref(row.paper_avg)}
                if avg.value is not None:
                    line.update(mean=repr(avg.value), partial=str(avg.partial).lower())
                    if not avg.partial:
                        d = _diff(avg.value, row.paper_avg)
                        line["diff"] = "" if d is None else repr(d)
                writer.writerow(line)
    return buf.getvalue()


def _csv_ref(ref: PaperValue | None) -> dict[str, str]:
    if ref is None:
        return {}
    return {
        "paper": "" if ref.value is None else repr(ref.value),
        "paper_failed": str(ref.value is None).lower(),
        "paper_approximate": str(ref.approximate).lower(),
        "paper_source": ref.source,
    }


# --------------------------------------------------------------------------- command line
def run_notes(loaded: Loaded, notes: list[str]) -> list[str]:
    out = list(notes)
    if loaded.errors:
        out.append(
            f"{len(loaded.errors)} results.json skipped (unreadable, a missing key or a bad "
            "value; the warnings name them)."
        )
    if loaded.unfinished:
        out.append(
            "Not finished (status in results.json), left out: "
            + ", ".join(f"{_show(p.parent)} ({s})" for p, s in loaded.unfinished)
            + "."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mega_lra.table",
        description="Aggregate run dirs (results.json) into the Mega paper's tables.",
    )
    parser.add_argument(
        "runs_dirs",
        nargs="*",
        type=Path,
        metavar="RUNS_DIR",
        help="directories searched recursively for results.json (default: runs/)",
    )
    parser.add_argument(
        "--table",
        choices=TABLES,
        default="lra",
        help="lra = Table 2 (default), attention = Table 3, sc = Table 4, ablation = Figure 4",
    )
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="(default: markdown)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a bad results.json is an error (exit 2, no table) instead of a warning",
    )
    ns = parser.parse_args(argv)
    dirs = ns.runs_dirs or [Path("runs")]
    for d in dirs:
        if not d.is_dir():
            print(
                f"error: {d} is not a directory (give the run dirs: {parser.prog} RUNS_DIR ...)",
                file=sys.stderr,
            )
            return 2
    try:
        paper = load_paper()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    loaded = load_runs(dirs)
    kind = "error" if ns.strict else "warning"
    for message in loaded.errors:
        print(f"{kind}: {message}", file=sys.stderr)
    if ns.strict and loaded.errors:
        print(f"error: {len(loaded.errors)} bad results.json (--strict): no table", file=sys.stderr)
        return 2
    where = ", ".join(str(d) for d in dirs)
    if not loaded.runs:
        print(f"error: no finished run (results.json) under {where}", file=sys.stderr)
        return 1
    groups, group_notes = group_runs(loaded.runs)
    grids = build(ns.table, groups, paper)
    notes = run_notes(loaded, group_notes)
    if not any(g.rows for g in grids):
        print(
            f"error: none of the {len(loaded.runs)} runs under {where} fits --table {ns.table}",
            file=sys.stderr,
        )
        for g in grids:
            for n in g.notes:
                print(f"  {n}", file=sys.stderr)
        return 1
    if ns.format == "csv":
        sys.stdout.write(render_csv(grids))
        for n in [n for g in grids for n in g.notes] + notes:
            print(f"note: {n}", file=sys.stderr)
    elif ns.format == "latex":
        sys.stdout.write(render_latex(grids, notes))
    else:
        sys.stdout.write(render_markdown(grids, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
