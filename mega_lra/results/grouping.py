"""From runs to cells: runs grouped by their `group` hash (the config without seed and paths),
one run per seed (the newest results.json of a rerun), and the choice of one group per table
cell (the highest mean validation accuracy). Also how runs are named: a model by its config
file's `label`, a task by its file's `label` where the paper's tables have it."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mega_lra.models import catalog
from mega_lra.results.runs import Run, show
from mega_lra.training.run_dir import flatten

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


# --------------------------------------------------------------------------- names
def model_label(model: str, info: Mapping[str, Any] | None = None) -> str:
    """How tables name a model: `conf/model/<model>.yaml`'s `label`; for a model no longer in
    `conf/model/`, the label its run recorded (`model_info`), else the name."""
    if model in catalog.model_names():
        return catalog.model_label(model)
    return str((info or {}).get("label") or model)


@cache
def paper_tasks() -> tuple[str, ...]:
    """The tasks of the paper's tables, in their order: the LRA tasks, then speech."""
    return (*catalog.lra_tasks(), *catalog.benchmark_tasks("speech"))


def task_label(task: str) -> str:
    """A task's column header: its file's `label` for the paper's tasks (ListOps, Path-X,
    SC-Raw); any other task (the demo ones) by its config name."""
    return catalog.task_label(task) if task in paper_tasks() else task


def task_rank(task: str) -> tuple[int, str]:
    order = paper_tasks()
    return (order.index(task) if task in order else len(order), task)


def task_order(tasks: Iterable[str]) -> list[str]:
    return sorted(set(tasks), key=task_rank)


def run_label(run: Run) -> str:
    return model_label(run.model, run.model_info)


# --------------------------------------------------------------------------- groups
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


def fmt_stat(stat: Stat) -> str:
    std = "n/a" if stat.std is None else f"{stat.std:.2f}"
    return f"{stat.mean:.2f} ± {std} (n={stat.n})"


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
        return f"{run_label(self.ref)} / {task_label(self.ref.task)}"


def identity(run: Run) -> tuple:
    return tuple(getattr(run, k) for k in IDENTITY)


def group_runs(runs: Iterable[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by `group`; one run per seed (the newest results.json); notes on what was
    merged or dropped."""
    notes: list[str] = []
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.group, identity(run)), []).append(run)
    identities: dict[str, list[tuple]] = {}
    for gid, ident in by_key:
        identities.setdefault(gid, []).append(ident)
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
                    f"{run_label(same[0])} / {task_label(same[0].task)}"
                    f", group {gid[:8]}, seed {seed}: {len(same)} runs, counted once: "
                    f"{show(same[0].run_dir)} (newest results.json); not counted: "
                    + ", ".join(show(r.run_dir) for r in same[1:])
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


# --------------------------------------------------------------------------- cells
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
        flats = {g.id: dict(zip(IDENTITY, identity(g.ref))) for g in groups}
    keys = sorted({k for f in flats.values() for k in f})
    differ = [k for k in keys if len({repr(f.get(k, "<absent>")) for f in flats.values()}) > 1]
    out = {}
    for g in groups:
        parts = [f"{k}={flats[g.id].get(k, '<absent>')}" for k in differ[:limit]]
        if len(differ) > limit:
            parts.append(f"+{len(differ) - limit} more")
        out[g.id] = f"group {g.id[:8]}" + (f" ({', '.join(parts)})" if parts else "")
    return out
