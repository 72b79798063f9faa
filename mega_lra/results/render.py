"""The tables as text: markdown (default), LaTeX (booktabs `tabular`) and CSV (one line per
cell, full precision). Every format shows the same cells: ours (mean ± sample std over seeds,
n), the paper's value and the difference ours − paper."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

from mega_lra.results.grouping import fmt_stat
from mega_lra.results.paper import PaperValue
from mega_lra.results.tables import LEGEND, PARAM_FLAG, Average, Grid, Row

FORMATS = ("markdown", "latex", "csv")
MISSING = "—"


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


def _ratio(key: str, value: float, paper: bool) -> str:
    """A Speed / Mem ratio: the paper's as printed (speed 1 decimal, memory 2), ours with 2."""
    return f"{value:.{1 if paper and key == 'speed' else 2}f}×"


def _lines(grid: Grid) -> tuple[list[str], list[list[str]]]:
    """Header and body rows as plain strings (ours / paper / Δ per row)."""
    header = [grid.corner] + [h for _, h in grid.extra_columns] + [h for _, h in grid.columns]
    if grid.has_avg:
        header.append("Avg")
    header += [h for _, h in grid.tail_columns]
    body = []
    for row in grid.rows:
        if row.paper and not row.cells and not row.tail:  # nothing of ours: the paper's alone
            body.append(_paper_line(grid, row))
            continue
        ours = [row.label + (" (ours)" if row.paper else "")]
        ours += [row.extra.get(k, "") for k, _ in grid.extra_columns]
        for key, _ in grid.columns:
            cell = row.cells.get(key)
            text = MISSING if cell is None else fmt_stat(cell.stat)
            if cell is not None and len(cell.candidates) > 1:
                text += " †"
            if key in row.flags:
                text += f" {PARAM_FLAG}"
            ours.append(text)
        if grid.has_avg:
            ours.append(_avg_text(row.avg))
        for key, _ in grid.tail_columns:
            value, mark = row.tail.get(key, (None, ""))
            ours.append(MISSING if value is None else f"{_ratio(key, value, False)} {mark}")
        body.append(ours)
        if not row.paper:
            continue
        ref = _paper_line(grid, row)
        delta = ["Δ ours − paper"] + ["" for _ in grid.extra_columns]
        for key, _ in grid.columns:
            cell, p = row.cells.get(key), row.paper.get(key)
            d = _diff(cell.stat.mean if cell else None, p)
            delta.append(_fmt_diff(d, bool(p and p.approximate)))
        if grid.has_avg:
            avg = row.avg
            ok = avg is not None and not avg.partial and avg.value is not None
            delta.append(_fmt_diff(_diff(avg.value, row.paper_avg) if ok else None))
        delta += ["" for _ in grid.tail_columns]
        body += [ref, delta]
    return header, body


def _paper_line(grid: Grid, row: Row) -> list[str]:
    ref = [f"{row.label} (paper: {row.paper_label})" if row.paper_label else "paper"]
    ref += [row.paper_extra.get(k, "") for k, _ in grid.extra_columns]
    ref += [_fmt_paper(row.paper.get(k)) for k, _ in grid.columns]
    if grid.has_avg:
        ref.append(_fmt_paper(row.paper_avg))
    for key, _ in grid.tail_columns:
        value, mark = row.paper_tail.get(key, (None, ""))
        ref.append(MISSING if value is None else f"{_ratio(key, value.value, True)} {mark}")
    return ref


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
    "device",  # Speed / Mem: where ours were measured
    "flag",  # § = outside LRA's ±10% parameter rule
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
                    line["flag"] = PARAM_FLAG if key in row.flags else ""
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
            for key, header in grid.tail_columns:
                value, _ = row.tail.get(key, (None, ""))
                ref, _ = row.paper_tail.get(key, (None, ""))
                if value is None and ref is None:
                    continue
                line = {**base, "column": header, **_csv_ref(ref)}
                if value is not None:
                    line.update(mean=repr(value), device=grid.device)
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
