"""Table 2's Speed / Mem benchmark (`python -m mega_lra.bench_training --table2`) on tiny models,
the time/memory-vs-length plot (`python -m mega_lra.plot bench`) and the model grid of
`make reproduce-lra MODELS=...` (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from mega_lra import plot, reproduce, table
from mega_lra.bench import train_step
from mega_lra.bench.worker import cpu_name
from mega_lra.models import catalog
from mega_lra.results import param_rule
from mega_lra.results.paper import load_paper
from tests.helpers import run_module
from tests.results.helpers import seeds_of


def test_table2_models_are_the_papers_speed_rows_xfm_first():
    paper = load_paper()
    models = train_step.table2_models()
    assert models[0] == "transformer"
    assert set(models) == {paper.lra_bench_of[row] for row in paper.lra_speed}
    assert {"reformer", "linformer", "bigbird", "performer", "luna", "s4_v2"} <= set(models)


def test_table2_cli_writes_ratios_against_xfm_with_the_device_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(param_rule, "base_params", lambda task: None)  # not this test's subject
    out = tmp_path / "t2"
    args = ["--table2", "--models", "mega_chunk", "--tiny", "--length", "64", "--steps", "1"]
    args += ["--warmup", "0", "--no-isolate", "--threads", "1", "--out", str(out)]
    proc = run_module("mega_lra.bench_training", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench_training.json").read_text())
    assert report["device"].startswith(cpu_name()) and report["machine"]["device"] == "cpu"
    rows = {r["experiment"]: r for r in report["rows"]}
    assert list(rows) == ["lra/transformer/text", "lra/mega_chunk/text"]
    xfm, chunk = rows["lra/transformer/text"], rows["lra/mega_chunk/text"]
    assert xfm["length"] == 64 and chunk["length"] == 64  # --length reached the task
    assert chunk["params"] < 100_000  # --tiny reached the model
    s = report["table2"]
    assert s["speed"]["mega_chunk"] == pytest.approx(xfm["step_ms"] / chunk["step_ms"])
    assert s["memory"]["mega_chunk"] == pytest.approx(chunk["step_peak_mib"] / xfm["step_peak_mib"])
    assert s["speed"]["transformer"] == 1.0
    md = (out / "bench_training.md").read_text()
    assert md.startswith("# Table 2") and report["device"] in md
    line = next(x for x in md.splitlines() if "| lra/mega_chunk/text |" in x)
    assert f"| {s['speed']['mega_chunk']:.2f}× |" in line and line.rstrip(" |").endswith("0.13×")
    assert "bench-train" in proc.stderr  # the progress bar

    # the report feeds Table 2's Speed / Mem columns
    runs = tmp_path / "runs"
    seeds_of(runs, "mc", [0.9], model="mega_chunk", task="text")
    assert table.main([str(runs), "--bench", str(out), "--format", "csv"]) == 0
    got = capsys.readouterr().out
    (speed,) = [r for r in got.splitlines() if r.startswith("lra,real,mega_chunk,Mega-chunk,Speed")]
    assert report["device"] in speed and repr(s["speed"]["mega_chunk"]) in speed


def test_table2_refuses_a_model_outside_table2(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_step.main(["--table2", "--models", "mega_s4d", "--out", str(tmp_path)])
    assert "not a Table 2 model" in capsys.readouterr().err


def test_plot_bench_draws_time_and_memory_against_length(tmp_path, capsys):
    lengths = [1024, 2048, 4096, 8192, 16384]
    rows = [
        {"model": m, "label": m, "length": n, "train_ms": n * n * k, "peak_mib": n * k}
        for m, k in (("transformer", 1e-4), ("performer", 1e-5))
        for n in lengths
    ]
    report = {"machine": {"cpu": "c", "threads": 1}, "args": {"dtype": "float32"}, "rows": rows}
    (tmp_path / "bench.json").write_text(json.dumps(report))
    assert plot.main(["bench", str(tmp_path), "--models", "performer", "transformer"]) == 0
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert plot.main(["bench", str(tmp_path / "bench.json")]) == 0  # never overwrites
    assert (tmp_path / "bench-2.png").is_file()
    assert plot.main(["bench", str(tmp_path), "--models", "nope"]) == 1
    assert "no such row" in capsys.readouterr().err


def test_reproduce_takes_models_as_make_passes_them(tmp_path):
    models = [m for m in catalog.recipe_models("lra") if m not in ("mega", "mega_chunk")][:2]
    args, _ = reproduce.parse_args(["--models", " ".join(models), "--out", str(tmp_path)])
    tasks = catalog.lra_tasks()
    wanted = {f"lra/{m}/{t}" for m in models for t in tasks}
    assert set(args.experiments) == wanted & set(catalog.experiment_names("lra/"))
    default, _ = reproduce.parse_args([])
    assert {e.split("/")[1] for e in default.experiments} == set(catalog.recipe_models("lra"))
