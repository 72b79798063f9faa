"""The speed benchmark on tiny models: the run dir gets JSON, Markdown and PNG, the numbers are
positive and consistent, and every model of conf/model/ can be benchmarked by name (no timing
assertions)."""

import json
import subprocess
import sys

import pytest
import torch

from mega_lra.bench import speed
from mega_lra.models import catalog
from mega_lra.training.config import compose


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
    assert speed.main(args) == 0

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
    chunk_label = f"{catalog.model_label('mega_chunk')} (C={speed.TINY_CHUNK})"
    assert table.count(f"| {chunk_label} |") == 2
    assert f"| {catalog.model_label('transformer')} | 64 |" in table
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_rows_over_the_time_budget_are_skipped_and_rounds_are_merged(tmp_path):
    args = ["--size", "tiny", "--lengths", "16", "32", "--models", "mega", "--no-hf"]
    args += ["--repeats", "1", "--warmup", "0", "--no-forward", "--threads", "1", "--rounds", "2"]
    args += ["--max-step-seconds", "1e-9", "--out", str(tmp_path)]
    assert speed.main(args) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert "train_ms" in rows[0] and "forward_ms" not in rows[0]
    assert len(rows[0]["train_ms_all"]) == 2 and len(rows[0]["rounds"]["train_ms"]) == 2
    assert "skipped" in rows[1] and "max-step-seconds" in rows[1]["skipped"]
    expected = f"| {catalog.model_label('mega')} | 32 | | | | | | | predicted"
    assert expected in (tmp_path / "bench.md").read_text()


def test_flop_count_of_the_chunked_text_backbone():
    # 245,760 multiply-adds per token per layer for the chunk-128 Text backbone:
    # projections d*h + d*(z+h+2d) + h*d = 139,264, NFFN 2*d*d_FFN = 65,536, C*(z+h) = 40,960
    classifier, cfg, _ = speed.build("mega_chunk", "text", 4096)
    recipe = compose(["experiment=lra/mega_chunk/text"]).model
    d, h, z = recipe.hidden_size, recipe.intermediate_size, recipe.shared_representation_size
    assert (d, h, z, recipe.chunk_size) == (128, 256, 64, 128)
    assert speed.step_macs(classifier.backbone, 4096, 1) == 245_760 * 4 * 4096


def test_the_text_size_is_each_models_text_recipe_with_dropout_off():
    for model in catalog.recipe_models("lra"):
        recipe = compose([f"experiment=lra/{model}/text"])
        cfg = speed.compose_model(model, "text")
        assert cfg.loader.batch_size == recipe.loader.batch_size
        for key, value in recipe.model.items():
            if "dropout" in key and isinstance(value, float):
                assert cfg.model[key] == 0.0
            else:
                assert cfg.model[key] == value, key


def test_a_recipes_bias_table_grows_to_the_measured_length():
    """Mega's Text recipe sizes its relative bias to the original's 4002 positions; the 4K and
    16K rows measure the same model with the table grown to the length (no error)."""
    model, _, _ = speed.build("mega", "text", 4096)
    assert model.backbone.config.max_positions == 4096
    model, _, _ = speed.build("mega", "text", 1024)
    assert model.backbone.config.max_positions == 4002  # the recipe's own, when it covers


def test_full_attention_comes_from_the_model():
    def info(model):
        return speed.build(model, "tiny", 32)[0].describe()

    assert speed.is_quadratic(info("mega")) and speed.is_quadratic(info("transformer"))
    assert not speed.is_quadratic(info("mega_chunk"))


@pytest.mark.parametrize("model", catalog.model_names())
def test_every_model_composes_and_builds_at_tiny_size(model):
    classifier, cfg, task = speed.build(model, "tiny", 32)
    assert task.max_length == 32
    hidden = classifier.hidden_size
    assert hidden <= speed.TINY["hidden_size"] or "hidden_size" not in cfg.model
    x, mask = torch.randn(2, 32, hidden), torch.ones(2, 32, dtype=torch.bool)
    assert classifier.backbone(x, mask).shape == (2, 32, hidden)
    assert speed.label(model, "tiny").startswith(catalog.model_label(model))


def test_cli_benchmarks_every_model_by_name(tmp_path):
    names = catalog.model_names()
    cmd = [sys.executable, "-m", "mega_lra.bench", "--size", "tiny", "--lengths", "32"]
    cmd += ["--models", *names, "--repeats", "1", "--warmup", "0", "--no-forward", "--no-hf"]
    cmd += ["--no-isolate", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["model"] for r in rows] == names
    assert all(r["train_ms"] > 0 and r["model_info"]["label"] for r in rows)


def test_unknown_rows_are_refused_with_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        speed.main(["--models", "no_such_model", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no_such_model" in err and "mega_chunk" in err
    with pytest.raises(SystemExit):
        speed.main(["--models", "hf_transformer", "--out", str(tmp_path)])
    assert "not a Mega model" in capsys.readouterr().err
