"""Table 2's state-space rows (S4-v1, S4-v2, S4-v2‡): the paper file holds them as
`lra_baselines.md` §1.2 prints them; `python -m mega_lra.table --table lra` shows every paper row,
with the paper's numbers alone where there is no run, and compares `s4_v2` runs with S4-v2."""

from __future__ import annotations

import csv
import io
import statistics

import pytest

from mega_lra import table
from tests.results.helpers import PAPER, seeds_of

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
# lra_baselines.md §1.2 (Mega Table 2), transcribed: six tasks, Avg, Speed, Mem
S4_ROWS = {
    "s4_v1": ("S4-v1", (58.35, 76.02, 87.09, 87.26, 86.05, 88.10), 80.48, None, None),
    "s4_v2": ("S4-v2", (59.60, 86.82, 90.90, 88.65, 94.20, 96.35), 86.09, None, None),
    "s4_v2_rerun": ("S4-v2‡", (59.10, 86.53, 90.94, 88.48, 94.01, 96.07), 85.86, 4.8, 0.14),
}


@pytest.mark.parametrize("key", sorted(S4_ROWS))
def test_paper_file_holds_the_s4_rows_of_table_2(key):
    row, accs, avg, speed, memory = S4_ROWS[key]
    assert PAPER.lra_rows[key] == row
    assert tuple(PAPER.lra[key][t].value for t in TASKS) == accs
    assert PAPER.lra_avg[key].value == avg == pytest.approx(statistics.mean(accs), abs=0.005)
    assert PAPER.lra[key]["image"].source == f"Table 2, row {row}, column Image"
    got_speed = PAPER.lra_speed.get(key)
    got_memory = PAPER.lra_memory.get(key)
    assert (got_speed and got_speed.value, got_memory and got_memory.value) == (speed, memory)
    assert (key in PAPER.lra_reference_only) == (key == "s4_v2_rerun")


def test_paper_rows_without_runs_show_the_papers_numbers_alone(tmp_path, capsys):
    seeds_of(tmp_path, "mega/listops", [0.6, 0.62])
    assert table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for row, accs, avg, speed, memory in S4_ROWS.values():
        (label,) = [k for k in lines if k.endswith("(paper: Table 2)") and k.startswith(row + " ")]
        cells = [c.strip() for c in lines[label].strip().strip("|").split("|")[1:]]
        assert cells[:7] == [f"{a:.2f}" for a in accs] + [f"{avg:.2f}"]
        # Speed / Mem as Table 2 prints them, marked with where they were measured
        ratios = [c.split(" (")[0] for c in cells[7:]]
        assert ratios == (["—", "—"] if speed is None else [f"{speed:.1f}×", f"{memory:.2f}×"])
    assert "S4-v1 (ours)" not in out and "S4-v2‡ (ours)" not in out  # no run: one line

    assert table.main([str(tmp_path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    (got,) = [r for r in rows if r["key"] == "s4_v1" and r["column"] == "Path-X"]
    assert float(got["paper"]) == 88.10 and got["mean"] == "" and got["diff"] == ""


def test_s4_v2_runs_are_compared_with_s4_v2(tmp_path, capsys):
    info = {"backbone": "x.S4", "label": "S4-v2"}
    pct = seeds_of(tmp_path, "s4/image", [0.87, 0.89], model="s4_v2", task="image", model_info=info)
    assert table.main([str(tmp_path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    (got,) = [r for r in rows if r["key"] == "s4_v2" and r["column"] == "Image"]
    assert float(got["diff"]) == pytest.approx(statistics.mean(pct) - 88.65, abs=1e-9)
    (ref,) = [r for r in rows if r["key"] == "s4_v2_rerun" and r["column"] == "Image"]
    assert ref["mean"] == "" and float(ref["paper"]) == 88.48


def test_paper_rows_alone_are_not_a_table(tmp_path, capsys):
    seeds_of(tmp_path, "sc", [0.9], task="sc_raw", model="mega_chunk")
    assert table.main([str(tmp_path), "--table", "lra"]) == 1
    assert "none of the 1 runs" in capsys.readouterr().err


def test_speed_report_shows_table_2_speed_and_memory_beside_ours():
    from mega_lra.bench import report

    rows = [
        {"model": m, "label": label, "length": 4096, "train_ms": ms, "peak_mib": mib,
         "tokens_per_s": 1.0}
        for m, label, ms, mib in (
            ("transformer", "Transformer", 100.0, 1000.0),
            ("s4_v2", "S4-v2", 25.0, 200.0),
            ("mega_chunk", "Mega-chunk", 20.0, 130.0),
        )
    ]  # fmt: skip
    text = report.markdown(
        {
            "machine": {"cpu": "cpu", "threads": 1, "torch": "x", "git_sha": None},
            "args": {"dtype": "float32", "batch_size": 1, "repeats": 1, "warmup": 0, "rounds": 1},
            "rows": rows,
            "summary": report.summarise(rows),
            "notes": [],
        }
    )
    s4 = next(line for line in text.splitlines() if line.startswith("| S4-v2 | 4.00× | 0.20× |"))
    assert s4.rstrip(" |").endswith("| 4.8× | 0.14×")  # S4-v2‡'s Table 2 Speed / Mem
    chunk = next(line for line in text.splitlines() if line.startswith("| Mega-chunk | 5.00× |"))
    assert chunk.rstrip(" |").endswith("| 5.5× | 0.13×")


def test_mega_s4d_runs_appear_beside_mega_in_the_ablation_table(tmp_path, capsys):
    def info(kernel, label):
        return {
            "backbone": "mega_lra.models.mega.MegaBackbone",
            "label": label,
            "mixer": "mega",
            "attention_activation": "laplace",
            "chunk_size": -1,
            "ema_projection_size": 16,
            "ema_kernel": kernel,
            "normalization_type": "batchnorm",
        }

    ema = seeds_of(tmp_path, "m", [0.83, 0.84], task="image", model_info=info("ema", "Mega"))
    s4d = seeds_of(
        tmp_path, "s", [0.86, 0.87], task="image", model="mega_s4d", model_info=info("s4d", "S4D")
    )
    seeds_of(tmp_path, "lo", [0.6], task="listops", group="lo")  # Mega alone: no row
    assert table.main([str(tmp_path), "--table", "ablation", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    kernel = {r["column"]: r for r in rows if r["table"] == "ablation_kernel"}
    assert set(kernel) == {"ema", "s4d"}
    assert kernel["ema"]["row"] == kernel["s4d"]["row"] and kernel["ema"]["row"].startswith("Image")
    assert float(kernel["ema"]["mean"]) == pytest.approx(statistics.mean(ema))
    assert float(kernel["s4d"]["mean"]) == pytest.approx(statistics.mean(s4d))
    # Figure 4's grids never mix the S4D kernel into Mega's series
    assert not [r for r in rows if r["table"] != "ablation_kernel" and r["mean"] and
                float(r["mean"]) == pytest.approx(statistics.mean(s4d))]  # fmt: skip
