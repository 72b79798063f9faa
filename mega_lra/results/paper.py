"""The Mega paper's own numbers and LRA's Table 1 (`paper_results.yaml` beside this file, the one
place they live), each with its source (table, row, column), and the settings behind them: a run
is compared with a paper number only when it was run in that setting.

An LRA table (`LRATable`: Mega's Table 2 = `Paper.table2`, LRA's Table 1 = `Paper.table1`) maps
our model names to the printed row: accuracies per task (None = ✗ / FAIL), the printed Avg, and,
for Table 2, the Speed and Mem columns (training on Text at 4K, x XFM‡) with where they come from.
`Paper.lra`, `lra_avg`, `lra_rows`, ... are Table 2's, under the names they always had."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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
class LRATable:
    """One printed LRA accuracy table, rows keyed by our model names, in the printed order."""

    source: str  # "Table 2" (Mega's) or "LRA Table 1"
    citation: str
    accuracy: dict[str, dict[str, PaperValue]]  # model -> task -> value
    avg: dict[str, PaperValue]  # model -> the printed Avg
    rows: dict[str, str]  # model -> the printed row name (XFM‡ for our Transformer)
    origin: dict[str, str]  # model -> where the row's accuracies come from, if copied
    avg_notes: dict[str, str]  # model -> why the printed Avg is not its row's mean (Sinkhorn)
    # Table 2's Speed and Mem columns (x XFM‡, training on Text at 4K), for the rows that give them
    speed: dict[str, PaperValue]
    memory: dict[str, PaperValue]
    speed_origin: dict[str, str]  # model -> where its Speed / Mem come from, if not Mega's
    # rows that name no model of ours (S4-v2‡, the Mega authors' re-run): shown for reference
    reference_only: frozenset[str]
    bench_of: dict[str, str]  # row -> the model of ours its Speed / Mem describe (default: row)


@dataclass(frozen=True)
class Paper:
    citation: str
    table2: LRATable  # the Mega paper's Table 2
    table1: LRATable  # LRA's Table 1 (Tay et al. 2021)
    attention_model: str
    attention: dict[str, dict[str, PaperValue]]  # task -> activation -> value
    sc: dict[str, dict[str, Any]]  # key -> {experiment, row, params, ref}
    chunk_points: tuple[PaperPoint, ...]
    ema_points: tuple[PaperPoint, ...]
    ema_values: tuple[int, ...]
    ema_note: str
    settings: dict[str, Any]

    # Table 2 under the names it always had
    @property
    def lra(self) -> dict[str, dict[str, PaperValue]]:
        return self.table2.accuracy

    @property
    def lra_avg(self) -> dict[str, PaperValue]:
        return self.table2.avg

    @property
    def lra_rows(self) -> dict[str, str]:
        return self.table2.rows

    @property
    def lra_speed(self) -> dict[str, PaperValue]:
        return self.table2.speed

    @property
    def lra_memory(self) -> dict[str, PaperValue]:
        return self.table2.memory

    @property
    def lra_reference_only(self) -> frozenset[str]:
        return self.table2.reference_only

    @property
    def lra_bench_of(self) -> dict[str, str]:
        return self.table2.bench_of

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


def _lra_table(raw: dict[str, Any], name: str, citation: str, num: Any) -> LRATable:
    """An LRA table from block `name` of the paper file (`lra` or `lra1`); `num` checks a
    number."""
    block = raw[name]
    src = block["source"]
    t = LRATable(src, citation, {}, {}, {}, {}, {}, {}, {}, {}, frozenset(), {})
    reference_only = set()
    for model, row in block["rows"].items():
        t.rows[model] = row["row"]
        if row.get("reference_only", False):
            reference_only.add(model)
        t.bench_of[model] = str(row.get("bench_of", model))
        for key, out in (("origin", t.origin), ("avg_note", t.avg_notes)):
            if key in row:
                out[model] = str(row[key])
        for key, column, out in (("speed", "Speed", t.speed), ("memory", "Mem", t.memory)):
            if key in row:
                where = f"{src}, row {row['row']}, column {column}"
                if "speed_origin" in row:
                    where += f" ({row['speed_origin']})"
                    t.speed_origin[model] = str(row["speed_origin"])
                out[model] = PaperValue(num(row[key], f"{name}.rows.{model}.{key}"), where)
        t.accuracy[model] = {
            task: PaperValue(
                num(v, f"{name}.rows.{model}.accuracy.{task}"),
                f"{src}, row {row['row']}, column {task_label(task)}",
            )
            for task, v in row["accuracy"].items()
        }
        t.avg[model] = PaperValue(
            num(row["avg"], f"{name}.rows.{model}.avg"), f"{src}, row {row['row']}, column Avg"
        )
    return replace(t, reference_only=frozenset(reference_only))


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
        table2 = _lra_table(raw, "lra", raw["paper"], num)
        table1 = _lra_table(raw, "lra1", raw["lra1"]["citation"], num)
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
            table2=table2,
            table1=table1,
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
