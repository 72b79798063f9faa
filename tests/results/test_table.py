"""`python -m mega_lra.table`: run dirs with synthetic results.json (known values) -> the paper's
tables. Expected numbers are computed here from what the test wrote (statistics.mean / stdev on
the percentages) and from the paper file, never typed in."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import statistics
import subprocess
from pathlib import Path

import pytest

from mega_lra import table
from mega_lra.models.catalog import lra_tasks, task_label
from tests.helpers import run_module
from tests.results.helpers import PAPER, seeds_of, write_run

REPO = Path(__file__).resolve().parents[2]
LRA_TASKS = lra_tasks()


def run_table(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = table.main([str(root), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def cell(rows: list[dict], row: str, column: str, tbl: str = "lra", data: str = "real") -> dict:
    found = [
        r
        for r in rows
        if r["table"] == tbl and r["data"] == data and r["key"] == row and r["column"] == column
    ]
    assert len(found) == 1, (row, column, found)
    return found[0]


def md_row(text: str, label: str) -> list[str]:
    """The cells of the first markdown table row whose first cell is `label`."""
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if line.startswith("|") and parts[0] == label:
            return parts[1:]
    raise AssertionError(f"no row {label!r} in:\n{text}")


def fmt(values: list[float]) -> str:
    std = statistics.stdev(values)
    return f"{statistics.mean(values):.2f} ± {std:.2f} (n={len(values)})"


# --------------------------------------------------------------------------- cells
def test_cell_is_mean_and_sample_std_of_seeds_in_percent(tmp_path, capsys):
    rng = random.Random(1)
    accs = [rng.uniform(0.3, 0.7) for _ in range(5)]
    pct = seeds_of(tmp_path, "mega/listops", accs)

    code, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    assert code == 0
    got = cell(csv_rows(out), "mega", "ListOps")
    assert float(got["mean"]) == pytest.approx(statistics.mean(pct), abs=1e-9)
    assert float(got["std"]) == pytest.approx(statistics.stdev(pct), abs=1e-9)  # ddof = 1
    assert got["n"] == "5" and got["seeds"] == "0;1;2;3;4"
    paper = PAPER.lra["mega"]["listops"].value
    assert float(got["paper"]) == paper
    assert float(got["diff"]) == pytest.approx(statistics.mean(pct) - paper, abs=1e-9)

    code, out, _ = run_table(tmp_path, capsys=capsys)
    assert md_row(out, "Mega (ours)")[0] == fmt(pct)
    assert md_row(out, "Mega (paper: Table 2)")[0] == f"{paper:.2f}"
    assert md_row(out, "Δ ours − paper")[0] == f"{statistics.mean(pct) - paper:+.2f}"


def test_single_seed_has_no_std_not_zero(tmp_path, capsys):
    write_run(tmp_path, "r", test_accuracy=0.4321)
    _, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    got = cell(csv_rows(out), "mega", "ListOps")
    assert got["n"] == "1" and got["std"] == ""
    _, out, _ = run_table(tmp_path, capsys=capsys)
    assert md_row(out, "Mega (ours)")[0] == f"{100 * 0.4321:.2f} ± n/a (n=1)"


def test_missing_cells_stay_missing_and_average_is_partial(tmp_path, capsys):
    a = seeds_of(tmp_path, "l", [0.61, 0.63])
    b = seeds_of(tmp_path, "t", [0.88, 0.9, 0.86], task="text")
    code, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    rows = csv_rows(out)
    missing = cell(rows, "mega", "Retrieval")
    assert missing["mean"] == "" and missing["n"] == "" and missing["diff"] == ""
    assert float(missing["paper"]) == PAPER.lra["mega"]["retrieval"].value  # paper still shown
    avg = cell(rows, "mega", "Avg")
    assert avg["partial"] == "true" and avg["diff"] == ""
    assert float(avg["mean"]) == pytest.approx(
        statistics.mean([statistics.mean(a), statistics.mean(b)])
    )

    _, out, _ = run_table(tmp_path, capsys=capsys)
    ours = md_row(out, "Mega (ours)")
    assert ours[2:6] == ["—"] * 4  # Retrieval, Image, Pathfinder, Path-X: missing, not 0
    assert (
        ours[6] == f"{statistics.mean([statistics.mean(a), statistics.mean(b)]):.2f} (partial 2/6)"
    )
    assert md_row(out, "Δ ours − paper")[6] == "—"


def test_complete_rows_average_against_the_paper_and_xfm_skips_its_failed_task(tmp_path, capsys):
    rng = random.Random(2)
    means = {}
    for task in LRA_TASKS:
        means[task] = statistics.mean(
            seeds_of(tmp_path, f"m/{task}", [rng.random() for _ in range(2)], task=task)
        )
    xfm = {}
    for task in LRA_TASKS[:5]:  # the paper's XFM‡ has ✗ on Path-X
        xfm[task] = statistics.mean(
            seeds_of(
                tmp_path,
                f"x/{task}",
                [rng.random() for _ in range(2)],
                task=task,
                model="transformer",
            )
        )
    _, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    rows = csv_rows(out)
    for model, got in (("mega", means), ("transformer", xfm)):
        avg = cell(rows, model, "Avg")
        assert avg["partial"] == "false"
        assert float(avg["mean"]) == pytest.approx(statistics.mean(got.values()))
        assert float(avg["diff"]) == pytest.approx(
            statistics.mean(got.values()) - PAPER.lra_avg[model].value
        )
    pathx = cell(rows, "transformer", "Path-X")
    assert pathx["paper"] == "" and pathx["paper_failed"] == "true" and pathx["mean"] == ""
    _, out, _ = run_table(tmp_path, capsys=capsys)
    assert md_row(out, "Transformer (paper: XFM‡, Table 2)")[5] == "✗"


# --------------------------------------------------------------------------- grouping
def test_runs_group_by_group_hash_not_by_folder(tmp_path, capsys):
    # one group spread over two sweep folders: one cell of 3 seeds
    write_run(
        tmp_path, "sweep_a/0", seed=0, test_accuracy=0.60, group="zeta", best_val_accuracy=0.7
    )
    write_run(
        tmp_path, "sweep_b/0", seed=1, test_accuracy=0.62, group="zeta", best_val_accuracy=0.7
    )
    write_run(
        tmp_path, "sweep_b/1", seed=2, test_accuracy=0.65, group="zeta", best_val_accuracy=0.7
    )
    # another group inside the same folder (another lr): kept apart; its validation is lower
    # (its test higher, and its id sorts first): the cell shows the first group
    lr = "optim:\n  lr: {}\nseed: {}\npaths:\n  root: {}\ntrainer:\n  default_root_dir: {}\n"
    write_run(
        tmp_path,
        "sweep_b/2",
        seed=0,
        test_accuracy=0.90,
        group="alpha",
        best_val_accuracy=0.6,
        config=lr.format(0.004, 5, "x", "x"),
    )
    (tmp_path / "sweep_a/0/config.yaml").write_text(lr.format(0.001, 0, "y", "y"))
    # the same hash on another task (a training-side bug): kept apart, and said
    write_run(tmp_path, "sweep_c/0", seed=3, task="text", group="zeta", best_val_accuracy=0.7)

    _, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    got = cell(csv_rows(out), "mega", "ListOps")
    assert got["group"] == "zeta" and got["n"] == "3" and got["groups_considered"] == "2"
    assert float(got["mean"]) == pytest.approx(statistics.mean([60.0, 62.0, 65.0]))

    _, out, _ = run_table(tmp_path, capsys=capsys)
    assert md_row(out, "Mega (ours)")[0].endswith("†")
    note = next(line for line in out.splitlines() if line.startswith("- † Mega / ListOps"))
    # both groups named with the config value that tells them apart (paths and seed ignored)
    assert "group zeta (optim.lr=0.001)" in note and "group alpha (optim.lr=0.004)" in note
    assert "root" not in note and "seed" not in note
    assert "test 90.00 ± n/a (n=1)" in note  # the other group's numbers are shown too
    assert "group zeta holds runs that disagree on task, experiment: kept apart" in out


def test_duplicate_seed_counts_once_keeping_the_newest(tmp_path, capsys):
    old = write_run(tmp_path, "first/0", seed=0, test_accuracy=0.20)
    new = write_run(tmp_path, "rerun/0", seed=0, test_accuracy=0.40)
    write_run(tmp_path, "first/1", seed=1, test_accuracy=0.30)
    os.utime(old / "results.json", (1_000_000, 1_000_000))
    os.utime(new / "results.json", (2_000_000, 2_000_000))

    _, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    got = cell(csv_rows(out), "mega", "ListOps")
    assert got["n"] == "2" and got["seeds"] == "0;1"
    assert float(got["mean"]) == pytest.approx(statistics.mean([40.0, 30.0]))
    _, out, _ = run_table(tmp_path, capsys=capsys)
    note = next(line for line in out.splitlines() if "seed 0: 2 runs, counted once" in line)
    assert note.index("rerun") < note.index("not counted") < note.index("first")


# --------------------------------------------------------------------------- what is compared
def test_generated_data_is_never_compared_with_the_paper(tmp_path, capsys):
    real = seeds_of(tmp_path, "real", [0.55, 0.57])
    gen = seeds_of(tmp_path, "gen", [0.95, 0.97, 0.99], data_source="generate", group="gen-listops")
    demo = seeds_of(
        tmp_path, "demo", [0.8], task="listops_small", data_source="generate", group="demo"
    )

    _, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    rows = csv_rows(out)
    ours = cell(rows, "mega", "ListOps")
    assert float(ours["mean"]) == pytest.approx(statistics.mean(real)) and ours["n"] == "2"
    shown = cell(rows, "mega", "ListOps", data="generated")
    assert float(shown["mean"]) == pytest.approx(statistics.mean(gen))
    assert shown["paper"] == "" and shown["diff"] == ""
    demo_cell = cell(rows, "mega", "listops_small", data="generated")
    assert float(demo_cell["mean"]) == pytest.approx(demo[0])
    assert not [r for r in rows if r["data"] == "generated" and r["paper_source"]]

    _, out, _ = run_table(tmp_path, capsys=capsys)
    main, generated = out.split("### Generated data")
    assert "4 run(s) on generated data are not compared with the paper" in main
    assert "(paper" not in generated and "Δ" not in generated.split("- Cells")[0]
    for rel in ("gen/0", "gen/1", "gen/2", "demo/0"):
        assert str(Path(tmp_path, rel)) in generated


def test_runs_outside_the_papers_setting_are_left_out_of_table_2(tmp_path, capsys):
    relu = seeds_of(
        tmp_path, "relu", [0.7, 0.72], task="text", attention_activation="relu2", group="relu"
    )
    soft = seeds_of(tmp_path, "soft", [0.8, 0.81], task="text", group="soft")
    # a chunk as long as the input is full attention (the image recipes write chunk 1024)
    img = seeds_of(tmp_path, "img", [0.6, 0.65], task="image", chunk_size=1024, group="img")
    _, out, _ = run_table(tmp_path, "--format", "csv", capsys=capsys)
    rows = csv_rows(out)
    assert float(cell(rows, "mega", "Text")["mean"]) == pytest.approx(statistics.mean(soft))
    assert cell(rows, "mega", "Text")["groups_considered"] == "1"
    assert float(cell(rows, "mega", "Image")["mean"]) == pytest.approx(statistics.mean(img))
    _, out, _ = run_table(tmp_path, capsys=capsys)
    assert "Mega / Text: left out, a setting differs from Table 2's" in out
    assert "attention_activation=relu2 (Table 2: softmax): 2 run(s)" in out

    _, out, _ = run_table(tmp_path, "--table", "attention", "--format", "csv", capsys=capsys)
    rows = csv_rows(out)
    got = cell(rows, "text", "relu2", tbl="attention")
    assert float(got["mean"]) == pytest.approx(statistics.mean(relu))
    assert float(got["paper"]) == PAPER.attention["text"]["relu2"].value
    assert got["paper_source"] == "Table 3, row Text, column relu2"
    assert float(cell(rows, "text", "softmax", tbl="attention")["mean"]) == pytest.approx(
        statistics.mean(soft)
    )
    assert cell(rows, "text", "laplace", tbl="attention")["mean"] == ""


def test_sc_table_picks_runs_by_experiment_name(tmp_path, capsys):
    fields = dict(task="sc_raw", attention_activation="laplace", chunk_size=1000)
    base = seeds_of(
        tmp_path,
        "base",
        [0.9, 0.92],
        experiment="speech/mega_sc_raw_base",
        group="b",
        params=340_123,
        **fields,
    )
    seeds_of(tmp_path, "other", [0.5], experiment=None, group="o", **fields)
    code, out, _ = run_table(tmp_path, "--table", "sc", "--format", "csv", capsys=capsys)
    assert code == 0
    rows = csv_rows(out)
    got = cell(rows, "base", "SC-Raw", tbl="sc")
    assert float(got["mean"]) == pytest.approx(statistics.mean(base))
    assert float(got["paper"]) == PAPER.sc["base"]["ref"].value and got["params"] == "340123"
    assert not [r for r in rows if r["key"] == "big"]
    _, out, _ = run_table(tmp_path, "--table", "sc", capsys=capsys)
    assert md_row(out, "Mega base (ours)")[0] == "340K"
    assert md_row(out, "Mega base (paper: Table 4)")[0] == PAPER.sc["base"]["params"]
    assert "SC-Raw: 1 run(s) left out, not run as experiment speech/mega_sc_raw_base" in out


def test_ablation_table_rows_are_series_and_paper_points_are_approximate(tmp_path, capsys):
    chunk = {
        c: seeds_of(
            tmp_path,
            f"c{c}",
            [0.8 + c / 1000, 0.81],
            task="text",
            model="mega_chunk",
            chunk_size=c,
            group=f"c{c}",
        )
        for c in (16, 64)
    }
    chunk[-1] = seeds_of(tmp_path, "full", [0.9, 0.88], task="text", group="full")
    ema = {
        h: seeds_of(
            tmp_path, f"h{h}", [0.5 + h / 100], task="text", ema_projection_size=h, group=f"h{h}"
        )
        for h in (0, 2)
    }
    seeds_of(tmp_path, "lo", [0.6], task="listops", group="lo")  # only defaults: no ablation
    _, out, _ = run_table(tmp_path, "--table", "ablation", "--format", "csv", capsys=capsys)
    rows = csv_rows(out)
    series = [r for r in rows if r["table"] == "ablation_chunk" and r["mean"]]
    assert {r["column"] for r in series} == {"16", "64", "full"}
    for c, values in chunk.items():
        got = next(r for r in series if r["column"] == ("full" if c == -1 else str(c)))
        assert float(got["mean"]) == pytest.approx(statistics.mean(values))
    point = next(p for p in PAPER.chunk_points if p.task == "text")
    at16 = next(r for r in series if r["column"] == str(point.x))
    assert at16["paper_approximate"] == "true" and float(at16["paper"]) == point.ref.value
    assert float(at16["diff"]) == pytest.approx(statistics.mean(chunk[16]) - point.ref.value)
    h_rows = [r for r in rows if r["table"] == "ablation_ema" and r["mean"]]
    got = {r["column"]: float(r["mean"]) for r in h_rows}
    assert got == pytest.approx({"0": ema[0][0], "2": ema[2][0], "16": statistics.mean(chunk[-1])})
    assert not [r for r in rows if r["row"].startswith("ListOps")]

    _, out, _ = run_table(tmp_path, "--table", "ablation", capsys=capsys)
    header = next(
        line for line in out.splitlines() if line.startswith("| Task") and "| 0 |" in line
    )
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [
        str(h) for h in PAPER.ema_values
    ]
    assert f"≈{point.ref.value:g}" in out


# --------------------------------------------------------------------------- bad input, formats
def test_bad_results_warn_by_file_and_key_and_the_table_is_still_built(tmp_path, capsys):
    good = seeds_of(tmp_path, "good", [0.5, 0.6])
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt/results.json").write_text('{"task": "listops",')
    nokey = write_run(tmp_path, "nokey", seed=7)
    data = json.loads((nokey / "results.json").read_text())
    del data["group"]
    (nokey / "results.json").write_text(json.dumps(data))
    write_run(tmp_path, "percent", seed=8, test_accuracy=63.1)  # percent, not a fraction
    write_run(tmp_path, "running", seed=9, status="running")

    code, out, err = run_table(tmp_path, "--format", "csv", capsys=capsys)
    assert code == 0
    got = cell(csv_rows(out), "mega", "ListOps")
    assert got["n"] == "2" and float(got["mean"]) == pytest.approx(statistics.mean(good))
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    assert any(
        str(tmp_path / "corrupt/results.json") in w and "not valid JSON" in w for w in warnings
    )
    assert any(
        str(nokey / "results.json") in w and "missing required key 'group'" in w for w in warnings
    )
    assert any("percent" in w and "'test_accuracy' = 63.1" in w and "[0, 1]" in w for w in warnings)
    assert "running (running)" in err  # unfinished: a note, not a warning

    code, out, err = run_table(tmp_path, "--strict", capsys=capsys)
    assert code == 2 and out == ""
    assert "3 bad results.json (--strict)" in err and "missing required key 'group'" in err


def test_latex_has_the_same_cells_as_markdown(tmp_path, capsys):
    pct = seeds_of(tmp_path, "m", [0.612, 0.634, 0.6])
    _, out, _ = run_table(tmp_path, "--format", "latex", capsys=capsys)
    assert "\\toprule" in out and "\\bottomrule" in out
    ours = next(line for line in out.splitlines() if line.startswith("Mega (ours)"))
    first = ours.split(" & ")[1]
    mean, std = statistics.mean(pct), statistics.stdev(pct)
    assert first == f"{mean:.2f} $\\pm$ {std:.2f} (n=3)"
    delta = next(line for line in out.splitlines() if line.startswith("$\\Delta$"))
    assert delta.split(" & ")[1] == f"${mean - PAPER.lra['mega']['listops'].value:+.2f}$"
    assert ours.endswith("\\\\") and ours.count(" & ") == len(LRA_TASKS) + 3  # Avg, Speed, Mem


def test_paper_file_is_consistent_with_itself():
    """Catches a mistyped number: each Avg is the paper's mean of its row (over the tasks
    without ✗, to the paper's rounding), Table 3's softmax Text is Table 2's Mega Text."""
    for model, row in PAPER.lra.items():
        values = [v.value for v in row.values() if v.value is not None]
        assert set(row) == set(LRA_TASKS)
        assert abs(statistics.mean(values) - PAPER.lra_avg[model].value) < 0.01, model
        for task, v in row.items():
            assert v.source == f"Table 2, row {PAPER.lra_rows[model]}, column {task_label(task)}"
    assert PAPER.attention["text"]["softmax"].value == PAPER.lra["mega"]["text"].value
    assert all(p.ref.approximate for p in PAPER.chunk_points)
    assert PAPER.ema_points == () and 0 in PAPER.ema_values


# --------------------------------------------------------------------------- the real command
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_module("mega_lra.table", *args, cwd=cwd, timeout=120)


def test_cli_reads_runs_dir_by_default_and_prints_csv(tmp_path):
    pct = seeds_of(
        tmp_path / "runs" / "multirun" / "2026-01-01",
        "job",
        [0.41, 0.45, 0.43],
        model="mega_chunk",
        legacy=True,  # a results.json from before schema 2 is still read
    )
    proc = _cli("--format", "csv", cwd=tmp_path)  # default RUNS_DIR: runs/
    assert proc.returncode == 0, proc.stderr
    got = cell(csv_rows(proc.stdout), "mega_chunk", "ListOps")
    assert float(got["mean"]) == pytest.approx(statistics.mean(pct))
    assert float(got["std"]) == pytest.approx(statistics.stdev(pct))

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli(str(empty), cwd=tmp_path)
    assert proc.returncode == 1 and f"no finished run (results.json) under {empty}" in proc.stderr
    proc = _cli(str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
