"""Smoke test of the benchmark harness on tiny models: the run dir gets JSON, Markdown and PNG,
and the numbers are positive and consistent (no timing assertions)."""

import json

from mega_lra import bench


def test_harness_writes_json_markdown_and_plot(tmp_path):
    out = tmp_path / "run"
    args = ["--size", "tiny", "--lengths", "32", "64", "--models", "mega_chunk", "mega"]
    args += [
        "transformer",
        "hf_mega_chunk",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    args += ["--hf-script", str(tmp_path / "missing.py")]  # HF rows: skipped with a note
    assert bench.main(args) == 0

    report = json.loads((out / "bench.json").read_text())
    rows = report["rows"]
    assert {(r["model"], r["length"]) for r in rows} == {
        (m, n) for m in ("mega_chunk", "mega", "transformer") for n in (32, 64)
    }
    for r in rows:
        assert r["train_ms"] > 0 and r["forward_ms"] > 0
        assert r["peak_mib"] >= 0
        assert (
            abs(r["tokens_per_s"] - r["length"] / (r["train_ms"] / 1000)) < 1e-6 * r["tokens_per_s"]
        )
        assert r["floor_fraction"] > 0 and r["floor_ms"] > 0
    assert report["summary"]["mega_chunk_scaling"]["length_ratio"] == 2
    assert any("transformers' Mega rows skipped" in n for n in report["notes"])
    table = (out / "bench.md").read_text()
    assert table.count("| Mega-chunk") == 2 and "| Transformer (XFM‡) | 64 |" in table
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_rows_over_the_time_budget_are_skipped_and_rounds_are_merged(tmp_path):
    args = ["--size", "tiny", "--lengths", "16", "32", "--models", "mega", "--no-hf"]
    args += ["--repeats", "1", "--warmup", "0", "--no-forward", "--threads", "1", "--rounds", "2"]
    args += ["--max-step-seconds", "1e-9", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert "train_ms" in rows[0] and "forward_ms" not in rows[0]
    assert len(rows[0]["train_ms_all"]) == 2 and len(rows[0]["rounds"]["train_ms"]) == 2
    assert "skipped" in rows[1] and "max-step-seconds" in rows[1]["skipped"]
    assert (
        "| Mega (full attention) | 32 | | | | | | | predicted"
        in (tmp_path / "bench.md").read_text()
    )


def test_flop_count_matches_the_issue():
    # 245,760 multiply-adds per token per layer for the chunk-128 Text backbone
    assert bench.step_macs("mega_chunk", "text", 4096, 1) == 245_760 * 4 * 4096
