"""Figures from run dirs, as PNG files drawn with matplotlib's Agg backend (no pyplot: no
global state, no GUI):

- Figure 4 (`ablation_panels` -> `draw_ablation`): accuracy vs attention chunk size and vs EMA
  dimension h; our points are the cells of the ablation table (`tables.ablation_series`), the
  paper's the approximate points of `paper_results.yaml`; runs on generated data left out;
- learning curves (`load_curves` -> `draw_curves`) from each run's `csv/metrics.csv`
  (Lightning's CSVLogger): loss and accuracy vs step, train solid and val dashed.

`output_path` and `save` never overwrite a file unless asked (`force`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mega_lra.atomic_files import write_bytes
from mega_lra.results.grouping import group_runs, task_label
from mega_lra.results.paper import Paper
from mega_lra.results.record import ResultsError, read_results
from mega_lra.results.runs import load_runs
from mega_lra.results.tables import AXES, ablation_series, x_label


class PlotError(ValueError):
    """Bad input for a figure: the message names the file or directory."""


# --------------------------------------------------------------------------- ablation (Figure 4)
@dataclass
class Line:
    """One series as plotted: x values (chunk -1 = full), y = mean, err = sample std (None for
    one seed), n = seeds."""

    label: str
    task: str
    x: list[int]
    y: list[float]
    err: list[float | None]
    n: list[int]


@dataclass
class Panel:
    axis: str  # chunk_size | ema_projection_size
    xs: list[int]  # every x on the axis, in plotting order (categorical positions)
    lines: list[Line]
    paper: list[Line]  # the paper's points (err None)
    note: str | None = None
    notes: list[str] = field(default_factory=list)


def ablation_panels(dirs: Sequence[Path], paper: Paper) -> tuple[list[Panel], list[str]]:
    """The data of both Figure 4 panels, before drawing; plus notes (skipped files, generated
    runs left out)."""
    loaded = load_runs(dirs)
    notes = [f"skipped: {e}" for e in loaded.errors]
    groups, group_notes = group_runs(loaded.runs)
    notes += group_notes
    generated = [g for g in groups if g.generated]
    if generated:
        notes.append(
            f"{sum(len(g.runs) for g in generated)} run(s) on generated data left out of the "
            "figure (not comparable with the paper)."
        )
    real = [g for g in groups if not g.generated]
    panels = []
    for axis in AXES:
        series, series_notes = ablation_series(real, paper, axis)
        lines = [
            Line(
                s.label,
                s.task,
                list(s.cells),
                [c.stat.mean for c in s.cells.values()],
                [c.stat.std for c in s.cells.values()],
                [c.stat.n for c in s.cells.values()],
            )
            for s in series
        ]
        points = paper.chunk_points if axis == "chunk_size" else paper.ema_points
        refs = []
        for task in dict.fromkeys(p.task for p in points):
            mine = [p for p in points if p.task == task and p.ref.value is not None]
            approx = any(p.ref.approximate for p in mine)
            refs.append(
                Line(
                    f"{task_label(task)}, paper{' (approx.)' if approx else ''}",
                    task,
                    [p.x for p in mine],
                    [p.ref.value for p in mine],
                    [None] * len(mine),
                    [0] * len(mine),
                )
            )
        xs = {x for line in lines + refs for x in line.x}
        if axis == "ema_projection_size":
            xs |= set(paper.ema_values)
        note = paper.ema_note if axis == "ema_projection_size" else None
        panels.append(
            Panel(axis, sorted(xs, key=lambda x: (x == -1, x)), lines, refs, note, series_notes)
        )
    return panels, notes


def draw_ablation(panels: Sequence[Panel]) -> Figure:
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        pos = {x: i for i, x in enumerate(panel.xs)}
        colors: dict[str, str] = {}
        for k, line in enumerate(panel.lines):
            err = [math.nan if e is None else e for e in line.err]
            bars = ax.errorbar(
                [pos[x] for x in line.x],
                line.y,
                yerr=err,
                marker="o",
                capsize=3,
                color=f"C{k}",
                label=line.label,
            )
            colors.setdefault(line.task, bars.lines[0].get_color())
        for line in panel.paper:
            ax.plot(
                [pos[x] for x in line.x],
                line.y,
                linestyle="none",
                marker="*",
                markersize=14,
                markerfacecolor="none",
                color=colors.get(line.task, "0.3"),
                label=line.label,
            )
        ax.set_xticks(range(len(panel.xs)), [x_label(x, panel.axis) for x in panel.xs])
        ax.set_xlabel(AXES[panel.axis])
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if panel.note:
            ax.set_title(panel.note, fontsize=8, wrap=True)
        if not panel.lines:
            ax.text(0.5, 0.5, "no ablation runs", ha="center", transform=ax.transAxes)
        if panel.lines or panel.paper:
            ax.legend(fontsize=7)
    fig.suptitle("Mega ablations (cf. paper Figure 4): ours (mean ± std over seeds) vs paper")
    return fig


# --------------------------------------------------------------------------- learning curves
CURVES = {  # what is plotted <- the CSVLogger columns that may hold it, in order of preference
    "train/loss": ("train/loss", "train/loss_step", "train/loss_epoch"),
    "val/loss": ("val/loss",),
    "train/acc": ("train/acc", "train/acc_step", "train/acc_epoch"),
    "val/acc": ("val/acc",),
}


@dataclass
class Curves:
    label: str
    path: Path  # the metrics.csv
    series: dict[str, tuple[list[int], list[float]]]  # curve name -> (steps, values)
    missing: list[str]  # curve names with no column (or no value) in the file


def read_metrics(path: Path) -> tuple[dict[str, tuple[list[int], list[float]]], list[str]]:
    """The curves of one `metrics.csv` (sparse rows: each fills only some columns) and the
    names of those it lacks. Raises PlotError naming the file when it has none of them."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise PlotError(f"{path}: cannot read: {err}") from err
    if "step" not in header:
        raise PlotError(f"{path}: no 'step' column (columns: {', '.join(header) or 'none'})")
    series, missing = {}, []
    for name, columns in CURVES.items():
        column = next((c for c in columns if c in header), None)
        steps, values = [], []
        for row in rows if column else []:
            try:
                step, value = int(float(row["step"])), float(row[column])
            except (TypeError, ValueError):
                continue  # this row logged other columns (or was cut off mid-write)
            steps.append(step)
            values.append(value)
        if steps:
            series[name] = (steps, values)
        else:
            missing.append(name)
    if not series:
        raise PlotError(
            f"{path}: none of the columns {', '.join(CURVES)} has a value "
            f"(columns: {', '.join(header)})"
        )
    return series, missing


def find_metrics(run_dir: Path) -> list[Path]:
    """`csv/metrics.csv` of a run dir, or of every run below a sweep dir."""
    own = run_dir / "csv" / "metrics.csv"
    if own.is_file():
        return [own]
    return sorted(run_dir.rglob("csv/metrics.csv"))


def _run_label(run_dir: Path, base: Path) -> str:
    """The run dir relative to `base` (its name when it is `base`), with model, task, seed."""
    label = str(run_dir.resolve().relative_to(base))
    label = run_dir.resolve().name if label == "." else label
    try:
        run = read_results(run_dir)
        label += f" ({run.model}, {run.task}, seed {run.seed})"
    except ResultsError:
        pass
    return label


def load_curves(dirs: Sequence[Path]) -> tuple[list[Curves], list[str]]:
    """The curves of every run under `dirs`, before drawing; plus warnings. Raises PlotError
    when a directory holds no metrics.csv."""
    files = []
    for d in dirs:
        found = find_metrics(d)
        if not found:
            raise PlotError(f"{d}: no csv/metrics.csv in it or below (is it a run dir?)")
        files += found
    files = list(dict.fromkeys(files))
    base = _common_dir([f.parent.parent for f in files])
    out, warnings = [], []
    for path in files:
        try:
            series, missing = read_metrics(path)
        except PlotError as err:
            warnings.append(f"skipped: {err}")
            continue
        if missing:
            warnings.append(f"{path}: no values for {', '.join(missing)}")
        out.append(Curves(_run_label(path.parent.parent, base), path, series, missing))
    return out, warnings


def draw_curves(runs: Sequence[Curves]) -> Figure:
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for k, run in enumerate(runs):
        for name, (steps, values) in run.series.items():
            split, metric = name.split("/")
            ax = loss_ax if metric == "loss" else acc_ax
            ax.plot(
                steps,
                values,
                color=f"C{k % 10}",
                linestyle="-" if split == "train" else "--",
                marker=None if split == "train" else "o",
                markersize=3,
                label=f"{run.label}: {split}",
            )
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Learning curves (train: solid, val: dashed)")
    return fig


# --------------------------------------------------------------------------- writing
def _common_dir(dirs: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(Path(d).resolve()) for d in dirs]))


def output_path(out: Path | None, dirs: Sequence[Path], name: str, force: bool) -> Path:
    """Where to write: `--out` (an error if it exists, unless force), else `name` in the common
    directory of `dirs`, with a suffix (-2, -3, ...) while that name is taken."""
    if out is not None:
        if out.suffix.lower() != ".png":
            raise PlotError(f"--out {out}: expected a .png file name")
        if out.exists() and not force:
            raise PlotError(f"{out} exists: pass --force to overwrite it, or another --out")
        return out
    target = _common_dir(dirs) / name
    stem, k = target.stem, 2
    while target.exists() and not force:
        target = target.with_name(f"{stem}-{k}.png")
        k += 1
    return target


def save(fig: Figure, path: Path, force: bool) -> Path:
    """Writes the PNG; without `force` never replaces a file (exclusive create)."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    fig.savefig(buf, format="png", dpi=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    if force:
        write_bytes(path, buf.getvalue())  # atomic: the old file or the new one, whole
    else:
        try:
            with open(path, "xb") as f:
                f.write(buf.getvalue())
        except FileExistsError as err:
            raise PlotError(f"{path} appeared meanwhile: not overwritten") from err
    return path
