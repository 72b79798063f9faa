"""The paper's four tables as data (`Grid`s of `Row`s of cells), before any rendering:

- `build_lra`: Table 2, rows = models (the paper's rows first, in its order, then any other
  model by label), columns = the LRA tasks (`conf/task/*.yaml` with `benchmark: lra`) + Avg +
  Speed and Mem (x XFM‡: the paper's, and ours from a benchmark report, `measured.py`, each
  marked with its device); a paper row without runs (or one naming no model of ours, S4-v2‡)
  shows the paper's numbers alone; a model with runs but no Table 2 row is compared with LRA's
  Table 1 where that has it; a cell whose runs break LRA's ±10% parameter rule is marked §
  (`param_rule.py`). `build_lra1`: the same against LRA's Table 1;
- `build_attention`: Table 3, Mega on Text and Image x the paper's attention functions;
- `build_sc`: Table 4, SC-Raw, Mega base / big by experiment name;
- `build_ablation`: Figure 4's data, accuracy vs chunk size and vs EMA dimension h; and, when
  there are runs of Mega with an S4D kernel (`mega_s4d`, `model_info.ema_kernel: s4d`), the same
  settings with Mega's EMA beside the S4D kernel.

`build(table, groups, paper)` gives the comparison on real data, then the same table on
generated data (never compared with the paper) in a section of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mega_lra.models.catalog import lra_tasks, model_names
from mega_lra.results import param_rule
from mega_lra.results.grouping import (
    Cell,
    Group,
    choose,
    describe,
    fmt_stat,
    model_label,
    run_label,
    task_label,
    task_order,
    task_rank,
)
from mega_lra.results.measured import Measured
from mega_lra.results.paper import LRATable, Paper, PaperValue
from mega_lra.results.runs import show

TABLES = ("lra", "lra1", "attention", "sc", "ablation", "spt")
PARAM_FLAG = "§"  # a cell whose runs break LRA's ±10% parameter rule


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
    # columns after Avg (Table 2's Speed, Mem): ours (value, device mark) and the paper's
    tail: dict[str, tuple[float, str]] = field(default_factory=dict)
    paper_tail: dict[str, tuple[PaperValue, str]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)  # columns marked PARAM_FLAG


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
    tail_columns: list[tuple[str, str]] = field(default_factory=list)  # after Avg
    device: str = ""  # the device of the measured tail cells


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
        runs = [show(r.run_dir) for g in groups for r in g.runs]
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


def _model_order(labels: dict[str, str], table: LRATable, every_paper_row: bool) -> list[str]:
    """The printed table's rows in its order (only those with runs unless `every_paper_row`),
    then every other model by label."""
    known = [m for m in table.rows if every_paper_row or m in labels]
    return known + sorted(set(labels) - set(known), key=lambda m: (labels[m], m))


def _paper_row_label(model: str, table: LRATable) -> str:
    """A paper row without runs: its model's label, or the paper's name for a reference row."""
    if model not in table.reference_only and model in model_names():
        return model_label(model)
    return table.rows[model]


SPEED_MEM = (("speed", "Speed"), ("memory", "Mem"))


def _speed_memory(rows: list[Row], table: LRATable, measured: Measured | None) -> list[str]:
    """Table 2's Speed and Mem cells: the paper's (marked by where they come from) and ours
    (from `measured`, marked by its device); the notes that say what the marks are."""
    marks: dict[str, str] = {}

    def mark(text: str) -> str:
        return marks.setdefault(text, f"({chr(ord('a') + len(marks))})")

    ours = None
    if measured is not None:
        ours = mark(f"ours: {measured.device}; {measured.what}; from {show(measured.path)}")
    for row in rows:
        for key, _ in SPEED_MEM:
            value = getattr(measured, key, {}).get(row.key) if measured else None
            if value is not None:
                row.tail[key] = (value, ours)
            ref = getattr(table, key).get(row.key)
            if ref is not None and ref.value is not None:
                where = table.speed_origin.get(
                    row.key, "measured by the Mega authors (device not stated in the table)"
                )
                row.paper_tail[key] = (ref, mark(f"paper: {where}"))
    notes = [
        "Speed / Mem: training on Text at 4K relative to XFM‡ (our `transformer`): speed = "
        "XFM‡'s step time / the model's, memory = the model's peak / XFM‡'s, on the same device; "
        "the mark after each number names where it was measured: "
        + "; ".join(f"{m} {text}" for text, m in marks.items())
        + "."
    ]
    if measured is None:
        notes.append(
            "Speed / Mem (ours): give --bench PATH (a report of python -m mega_lra.bench_training "
            "--table2, or of python -m mega_lra.bench)."
        )
    else:
        missing = sorted(r.label for r in rows if r.cells and "speed" not in r.tail)
        if missing:
            notes.append(f"Not in the --bench report: {', '.join(missing)}.")
    return notes


def _param_flags(rows: list[Row], base_params, notes: list[str]) -> None:
    """Mark (PARAM_FLAG) each cell whose runs' parameter count is outside LRA's ±10% of the base
    Transformer's (`param_rule`); one note listing them, one for tasks without a base recipe."""
    broken, unchecked = [], set()
    for row in rows:
        for task, cell in row.cells.items():
            counts = sorted({r.params for r in cell.group.runs if r.params is not None})
            if not counts:
                continue
            base = base_params(task)
            if base is None:
                unchecked.add(task_label(task))
                continue
            if not all(param_rule.within_rule(n, base) for n in counts):
                row.flags.add(task)
                have = "/".join(f"{n:,}" for n in counts)
                broken.append(
                    f"{row.label} on {task_label(task)}: {have} vs {base:,} "
                    f"({max(counts, key=lambda n: abs(n - base)) / base:.2f}×)"
                )
    rule = (
        f"{PARAM_FLAG} = the runs' parameters (results.json) are outside LRA's rule, within "
        f"±{param_rule.TOLERANCE:.0%} of the base Transformer's on the task (recipe "
        f"lra/{param_rule.BASE_MODEL}/<task>)"
    )
    if broken:
        notes.append(f"{rule}: " + "; ".join(broken) + ".")
    if unchecked:
        notes.append(
            f"LRA's parameter rule not checked on {', '.join(sorted(unchecked))}: no recipe "
            f"lra/{param_rule.BASE_MODEL}/<task>."
        )


def build_lra(
    groups: Sequence[Group],
    paper: Paper,
    compare: bool = True,
    *,
    table1: bool = False,
    measured: Measured | None = None,
    base_params=None,
) -> Grid:
    """Table 2 (`table1`: LRA's Table 1). `compare=False` (generated data): no paper values,
    columns = the tasks present. `measured`: our Speed / Mem (Table 2 only). `base_params(task)`:
    the base Transformer's parameter count, for the ±10% flag."""
    table = paper.table1 if table1 else paper.table2
    notes: list[str] = []
    by_cell = _by(groups, "model", "task")
    ref = paper if compare else None
    if not compare:
        tasks = task_order({g.ref.task for g in groups})
    else:
        tasks = lra_tasks()
        outside: dict[str, int] = {}
        for g in groups:
            if g.ref.task not in tasks:
                outside[g.ref.task] = outside.get(g.ref.task, 0) + len(g.runs)
        if outside:
            notes.append(
                f"Runs on tasks outside {table.source} (not shown): "
                + ", ".join(f"{t} ({n})" for t, n in sorted(outside.items()))
                + "."
            )
    labels = {g.ref.model: run_label(g.ref) for g in groups if g.ref.task in tasks}
    rows = []
    for model in _model_order(labels, table, every_paper_row=compare):
        label = labels.get(model) or _paper_row_label(model, table)
        cells = {}
        for task in tasks:
            where = f"{label} / {task_label(task)}"
            cand = by_cell.get((model, task), [])
            if paper.describes(model):
                fields = ("chunk_size", "attention_activation", "ema_projection_size")
                cand = _candidates(cand, ref, "Table 2", fields, where, notes)
            cell = choose(cand)
            if cell is not None:
                cells[task] = cell
                _cell_notes(where, cell, task_label(task), notes)
        row = Row(model, label, cells)
        if compare:
            # a model of ours with runs but no row here: LRA's Table 1 row, if it has one
            source = table
            if model not in table.rows and model in paper.table1.rows:
                source = paper.table1
            row.paper = dict(source.accuracy.get(model, {}))
            name = source.rows.get(model)
            row.paper_label = source.source if name in (None, label) else f"{name}, {source.source}"
            row.paper_avg = source.avg.get(model)
            expected = tuple(
                t for t in tasks if row.paper.get(t, PaperValue(0, "")).value is not None
            )
            present = tuple(t for t in expected if t in cells)
            value = statistics.fmean(cells[t].stat.mean for t in present) if present else None
            row.avg = Average(value, present, expected)
        rows.append(row)
    grid = Grid(
        "lra1" if table1 else "lra",
        f"LRA accuracy (%), ours vs {table.source}"
        + (f" ({table.citation})" if table1 else " (the Mega paper's)"),
        "Model",
        [(t, task_label(t)) for t in tasks],
        rows,
        notes,
        generated=not compare,
        has_avg=compare,
    )
    if not compare:
        return grid
    if not table1:
        grid.tail_columns = [(key, header) for key, header in SPEED_MEM]
        grid.device = measured.device if measured else ""
        notes += _speed_memory(rows, table, measured)
    _param_flags(rows, base_params or param_rule.base_params, notes)
    sources = [table] if table1 else [table, paper.table1]  # Table 1 rows show under Table 2
    for source in sources:
        for model, text in source.avg_notes.items():
            if any(r.key == model and r.paper_avg is source.avg[model] for r in rows):
                notes.append(f"{source.rows[model]}, {source.source}: Avg {text}.")
    lead = (
        "Avg = mean of the task means; 'partial k/m' = over the k tasks present only, not "
        "compared with the paper."
    )
    if table1:
        lead += " Path-X is FAIL (✗) for every model of LRA's Table 1; its Avg is over five tasks."
    else:
        lead += (
            " The Transformer is compared with XFM‡ (the authors' re-run), whose Avg is over the "
            "five tasks without ✗; a model with no Table 2 row with LRA's Table 1 where it has one."
        )
    notes.insert(0, lead)
    return grid


def build_attention(groups: Sequence[Group], paper: Paper, compare: bool = True) -> Grid:
    """Table 3: Mega (full attention) on Text and Image, one column per attention function (the
    paper's, then any other run). `compare=False`: no paper values, no setting filter."""
    notes: list[str] = []
    model = paper.attention_model
    ref = paper if compare else None
    mine = [g for g in groups if g.ref.model == model]
    tasks = list(paper.attention)
    paper_acts = list(dict.fromkeys(a for row in paper.attention.values() for a in row))
    acts = paper_acts + sorted(
        {str(g.ref.attention_activation) for g in mine if g.ref.task in tasks} - set(paper_acts)
    )
    by_cell = _by(mine, "task", "attention_activation")
    mlabel = model_label(model, mine[0].ref.model_info if mine else None)
    rows = []
    for task in tasks:
        tlabel = task_label(task)
        cells = {}
        for act in acts:
            where = f"{mlabel} / {tlabel} / {act}"
            fields = ("chunk_size", "ema_projection_size")
            cand = _candidates(by_cell.get((task, act), []), ref, "Table 3", fields, where, notes)
            cell = choose(cand)
            if cell is not None:
                cells[act] = cell
                _cell_notes(where, cell, tlabel, notes)
        if not cells:
            continue
        row = Row(task, f"{mlabel}, {tlabel}", cells)
        if compare:
            row.paper = dict(paper.attention[task])
            row.paper_label = "Table 3"
        rows.append(row)
    return Grid(
        "attention",
        f"Attention functions (%), ours vs the paper's Table 3 ({mlabel}, full attention)",
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
        _cell_notes(ref["row"], cell, task_label("sc_raw"), notes)
        row = Row(key, ref["row"], {"sc_raw": cell}, extra={"params": _params(cell.group)})
        if compare:
            row.paper = {"sc_raw": ref["ref"]}
            row.paper_label = "Table 4"
            row.paper_extra = {"params": ref["params"]}
        rows.append(row)
    rest = [g for gs in by_exp.values() for g in gs if g.ref.task == "sc_raw"]
    wanted = " or ".join(r["experiment"] for r in paper.sc.values())
    _left_out(task_label("sc_raw"), rest, f"not run as experiment {wanted}", notes)
    return Grid(
        "sc",
        "SC-Raw accuracy (%), ours vs the paper's Table 4",
        "Model",
        [("sc_raw", task_label("sc_raw"))],
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
RECIPE_CHUNK = 128  # the paper's Mega-chunk C, for a task its recipes do not cover


def x_label(x: int, axis: str) -> str:
    return "full" if axis == "chunk_size" and x == -1 else str(x)


def ablation_series(
    groups: Sequence[Group], paper: Paper, axis: str, compare: bool = True
) -> tuple[list[Series], list[str]]:
    """Figure 4's data along `axis` (chunk_size or ema_projection_size).

    Groups of a model the paper's settings describe (Mega, Mega-chunk) on one task that agree
    on the other settings (attention function, the other axis, normalisation) form a series;
    x = the axis value (a chunk as long as the input counts as full, -1). A series holding only
    the paper's default on the axis (h = 16; c = full or the recipe's chunk) is no ablation:
    left out, with a note. Paper points (`compare`) attach to a series run in the paper's
    setting (its attention function, and h = 16 on the chunk axis)."""
    notes: list[str] = []
    settings = paper.settings
    held = [k for k in SHORT if k != axis]
    series_of: dict[tuple, dict[int, list[Group]]] = {}
    for g in groups:
        run = g.ref
        if not paper.describes(run.model) or getattr(run, axis) is None:
            continue
        if _ema_kernel(run) not in (None, "ema"):
            continue  # Mega with another kernel: its own grid (build_kernel_ablation)
        values = {k: getattr(run, k) for k in SHORT}
        values["chunk_size"] = paper.full(run.task, run.chunk_size)
        key = (run.task, *(values[k] for k in held))
        series_of.setdefault(key, {}).setdefault(values[axis], []).append(g)
    out, only_default = [], []
    for key in sorted(series_of, key=lambda k: (task_rank(k[0]), str(k))):
        task, fixed = key[0], dict(zip(held, key[1:]))
        by_x = series_of[key]
        if axis == "chunk_size":
            defaults = {-1} | (paper.recipe_chunks(task) - {-1} or {RECIPE_CHUNK})
        else:
            defaults = {settings["ema_projection_size"]}
        tag = ", ".join(f"{SHORT[k]}={x_label(v, k)}" for k, v in fixed.items())
        label = f"{task_label(task)} ({tag})"
        if set(by_x) <= defaults:
            only_default.append(label)
            continue
        cells = {}
        for x in sorted(by_x, key=lambda x: (x == -1, x)):  # full attention last
            cells[x] = choose(by_x[x])
            where = f"{label}, {SHORT[axis]}={x_label(x, axis)}"
            _cell_notes(where, cells[x], task_label(task), notes)
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


KERNELS = ("ema", "s4d")  # the EMA sub-layer's kernel (MegaConfig.ema_kernel)


def _ema_kernel(run) -> str | None:
    """A Mega run's EMA kernel (`ema` for runs recorded before the field), None for others."""
    info = run.model_info or {}
    if info.get("mixer") != "mega" and not info.get("ema_kernel"):
        return None
    return str(info.get("ema_kernel") or "ema")


def build_kernel_ablation(groups: Sequence[Group], paper: Paper, compare: bool = True) -> Grid:
    """Mega's EMA beside the S4D kernel (`mega_s4d`), one row per task and fixed settings
    (attention, chunk, h, norm) that holds an S4D run; no paper values (the Mega paper has no
    such ablation; the S4 repository reports Mega with S4 on Image at 86.68 against its EMA at
    83.42 validation accuracy)."""
    notes: list[str] = []
    by_key: dict[tuple, dict[str, list[Group]]] = {}
    for g in groups:
        run = g.ref
        kernel = _ema_kernel(run)
        if kernel is None:
            continue
        fixed = {k: getattr(run, k) for k in SHORT}
        fixed["chunk_size"] = paper.full(run.task, run.chunk_size)
        key = (run.task, *fixed.values())
        by_key.setdefault(key, {}).setdefault(kernel, []).append(g)
    rows = []
    for key in sorted(by_key, key=lambda k: (task_rank(k[0]), str(k))):
        by_kernel = by_key[key]
        if set(by_kernel) <= {"ema"}:
            continue  # no S4D run at these settings: nothing to put beside Mega
        task, fixed = key[0], dict(zip(SHORT, key[1:]))
        tag = ", ".join(f"{SHORT[k]}={x_label(v, k)}" for k, v in fixed.items())
        label = f"{task_label(task)} ({tag})"
        cells = {}
        for kernel, cand in by_kernel.items():
            cells[kernel] = choose(cand)
            _cell_notes(f"{label}, kernel={kernel}", cells[kernel], task_label(task), notes)
        rows.append(Row(label, label, cells))
    kernels = list(KERNELS) + sorted({k for v in by_key.values() for k in v} - set(KERNELS))
    return Grid(
        "ablation_kernel",
        "Accuracy (%) vs the EMA sub-layer's kernel: Mega's EMA (ema) and an S4D kernel (s4d, "
        "model mega_s4d)",
        "Task (fixed settings)",
        [(k, k) for k in kernels],
        rows,
        notes,
        generated=not compare,
    )


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
    kernel = build_kernel_ablation(groups, paper, compare)
    if kernel.rows:
        grids.append(kernel)
    return grids


BUILDERS = {
    "lra": lambda gs, p, c, **kw: [build_lra(gs, p, c, **kw)],
    "lra1": lambda gs, p, c, **kw: [build_lra(gs, p, c, table1=True, **kw)],
    "attention": lambda gs, p, c, **kw: [build_attention(gs, p, c)],
    "sc": lambda gs, p, c, **kw: [build_sc(gs, p, c)],
    "ablation": lambda gs, p, c, **kw: build_ablation(gs, p, c),
    "spt": lambda gs, p, c, **kw: _build_spt(gs, p, c),
}


def _build_spt(groups: Sequence[Group], paper: Paper, compare: bool) -> list[Grid]:
    from mega_lra.results.spt import build_spt  # self-pretraining vs from scratch

    return build_spt(groups, paper, compare)


def build(table: str, groups: Sequence[Group], paper: Paper, **options) -> list[Grid]:
    """The grids of one `--table`: the paper comparison on real data, then (if any) the same
    table on generated data, without paper values, in a section of its own. `options` go to
    the LRA tables (`measured`, `base_params`)."""
    if table != "spt":  # self-pretraining runs and their controls: --table spt only
        groups = [g for g in groups if not getattr(g.ref, "spt", None)]
    real = [g for g in groups if not g.generated]
    gen = [g for g in groups if g.generated]
    grids = BUILDERS[table](real, paper, True, **options)
    gen_grids = [g for g in BUILDERS[table](gen, paper, False, **options) if g.rows] if gen else []
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
            "Runs on generated data shown: " + ", ".join(show(d) for d in shown) + "."
        )
    return grids + gen_grids
