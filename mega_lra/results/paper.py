"""The Mega paper's own numbers (`paper_results.yaml` beside this file, the one place they live),
each with its source (table, row, column), and the settings behind them: a run is compared with
a paper number only when it was run in that setting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mega_lra.models.catalog import task_label
from mega_lra.results.record import is_number
from mega_lra.results.runs import Run

PAPER_FILE = Path(__file__).with_name("paper_results.yaml")


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
    lra: dict[str, dict[str, PaperValue]]  # model -> task -> value, in the paper's row order
    lra_avg: dict[str, PaperValue]  # model -> the paper's Avg
    lra_rows: dict[str, str]  # model -> the paper's row name (XFM‡ for the Transformer)
    # Table 2's Speed and Mem columns (x XFM‡, training on Text at 4K), for the rows that give them
    lra_speed: dict[str, PaperValue]
    lra_memory: dict[str, PaperValue]
    # rows that name no model of ours (S4-v2‡, the Mega authors' re-run): shown for reference
    lra_reference_only: frozenset[str]
    lra_bench_of: dict[str, str]  # row -> the model of ours its Speed / Mem describe (default: row)
    attention_model: str
    attention: dict[str, dict[str, PaperValue]]  # task -> activation -> value
    sc: dict[str, dict[str, Any]]  # key -> {experiment, row, params, ref}
    chunk_points: tuple[PaperPoint, ...]
    ema_points: tuple[PaperPoint, ...]
    ema_values: tuple[int, ...]
    ema_note: str
    settings: dict[str, Any]

    def speed_memory(self, model: str) -> tuple[PaperValue, PaperValue | None] | None:
        """Table 2's (Speed, Mem) for our `model` (S4-v2‡'s for `s4_v2`), or None."""
        for row, of in self.lra_bench_of.items():
            if of == model and row in self.lra_speed:
                return self.lra_speed[row], self.lra_memory.get(row)
        return None

    def describes(self, model: str) -> bool:
        """Whether the paper's settings (chunk size, attention, EMA dimension) are given for
        `model` (Mega, Mega-chunk); only such a model's runs are filtered by them."""
        return model in self.settings["chunk_size"]

    def recipe_chunks(self, task: str) -> set[int]:
        """The chunk sizes the paper's recipes use on `task` (-1 = full attention)."""
        return {c[task] for c in self.settings["chunk_size"].values() if task in c}

    def full(self, task: str, chunk: int | None) -> int | None:
        """-1 for full attention: chunk -1, or a chunk at least as long as the task's input."""
        length = self.settings["length"].get(task)
        if chunk is not None and length is not None and chunk >= length:
            return -1
        return chunk

    def mismatch(self, run: Run, table: str, fields: Sequence[str]) -> list[str]:
        """How a run differs from the paper's setting for its (model, task) on `fields`; a field
        the paper does not set, or the run's model does not have (None), is no difference."""
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
            if want[k] is not None and have[k] is not None and have[k] != want[k]
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
        if v is not None and not is_number(v):
            raise _paper_error(path, key, f"a number or null (✗), got {v!r}")
        return None if v is None else float(v)

    try:
        lra, lra_avg, lra_rows = {}, {}, {}
        lra_speed, lra_memory, reference_only, bench_of = {}, {}, set(), {}
        src = raw["lra"]["source"]
        for model, row in raw["lra"]["rows"].items():
            lra_rows[model] = row["row"]
            if row.get("reference_only", False):
                reference_only.add(model)
            bench_of[model] = str(row.get("bench_of", model))
            for key, column, out in (("speed", "Speed", lra_speed), ("memory", "Mem", lra_memory)):
                if key in row:
                    out[model] = PaperValue(
                        num(row[key], f"lra.rows.{model}.{key}"),
                        f"{src}, row {row['row']}, column {column}",
                    )
            lra[model] = {
                task: PaperValue(
                    num(v, f"lra.rows.{model}.accuracy.{task}"),
                    f"{src}, row {row['row']}, column {task_label(task)}",
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
            lra_speed=lra_speed,
            lra_memory=lra_memory,
            lra_reference_only=frozenset(reference_only),
            lra_bench_of=bench_of,
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
