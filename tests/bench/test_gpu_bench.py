"""The benchmark's GPU-run support, checked on CPU: transformers' Mega imported from a site folder
(`--hf-site`, as the card runs it from carried wheels), the math-attention XFM‡ row, the Path-X
configuration, the time budget, and the GPU targets table (no timing assertions)."""

import json
import textwrap

import pytest

from mega_lra.bench import report, speed
from mega_lra.models import catalog
from mega_lra.training.config import compose


def _stub_site(tmp_path):
    """A folder with a stand-in `transformers` package: its MegaModel is ours, so only the
    plumbing (path, import, config, impl) is under test."""
    pkg = tmp_path / "site" / "transformers"
    (pkg / "models" / "mega").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            import types
            from mega_lra import MegaConfig, MegaModel
            __version__ = "4.99.0-stub"
            logging = types.SimpleNamespace(set_verbosity_error=lambda: None)
            """
        )
    )
    return tmp_path / "site"


def test_hf_rows_run_from_an_hf_site_folder(tmp_path):
    out = tmp_path / "run"
    args = ["--size", "tiny", "--lengths", "32", "--models", "hf_mega_chunk", "transformer_math"]
    args += ["--repeats", "1", "--warmup", "0", "--threads", "1", "--dtype", "bfloat16"]
    args += ["--hf-site", str(_stub_site(tmp_path)), "--out", str(out)]
    assert speed.main(args) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    by_model = {r["model"]: r for r in rows}
    assert by_model["hf_mega_chunk"]["impl"] == "transformers-4.99.0-stub"
    assert by_model["hf_mega_chunk"]["train_ms"] > 0
    assert by_model["transformer_math"]["train_ms"] > 0
    math_label = speed.label("transformer_math", "tiny")
    assert math_label == f"{catalog.model_label('transformer')}, math attention"
    assert f"| {math_label} | 32 |" in (out / "bench.md").read_text()


def test_hf_runner_explains_why_transformers_rows_are_skipped(tmp_path):
    parser = speed.argparse.Namespace
    ns = parser(hf=True, hf_site=None, device="cuda", dtype="bfloat16")
    assert "--hf-site" in speed._hf_runner(ns)
    ns = parser(hf=True, hf_site=str(tmp_path), device="cuda", dtype="bfloat16")
    assert "no transformers 4.x" in speed._hf_runner(ns)
    assert speed._hf_runner(parser(hf=False)) == "disabled (--no-hf)"


def test_pathx_config_is_the_recipe():
    recipe = compose(["experiment=lra/mega/pathx"])
    classifier, cfg, task = speed.build("mega", "pathx", 16384)
    config = classifier.backbone.config
    assert (config.hidden_size, config.intermediate_size, config.shared_representation_size) == (
        64,
        128,
        32,
    )
    assert config.attention_activation == "laplace"
    assert config.normalization_type == recipe.model.normalization_type
    assert config.normalization_type in ("batchnorm", "syncbatchnorm")
    assert config.normalize_before_mega and config.final_norm and config.truncation == 4096
    assert config.effective_chunk_size == -1 and config.dropout_prob == 0.0
    assert cfg.loader.batch_size == recipe.loader.batch_size
    assert task.max_length == 16384 == recipe.task.max_length
    chunked = speed.build("mega_chunk", "pathx", 16384)[0].backbone.config
    assert chunked.effective_chunk_size == 4096
    assert speed.label("mega_chunk", "pathx") == f"{catalog.model_label('mega_chunk')} (C=4096)"
    assert speed.label("mega_chunk", "text") == f"{catalog.model_label('mega_chunk')} (C=128)"


def test_time_budget_skips_the_remaining_cases_and_still_writes_the_report(tmp_path):
    args = ["--size", "tiny", "--lengths", "16", "32", "--models", "mega", "--no-hf"]
    args += ["--repeats", "1", "--warmup", "0", "--threads", "1", "--time-budget", "0"]
    args += ["--out", str(tmp_path)]
    assert speed.main(args) == 0
    run = json.loads((tmp_path / "bench.json").read_text())
    assert run["complete"] is True
    assert all("time-budget" in r["skipped"] for r in run["rows"])
    assert (tmp_path / "bench.png").is_file()


@pytest.mark.parametrize(
    "summary,met",
    [
        (
            dict(
                mega_chunk_vs_hf_speed=3.2,
                mega_vs_hf_speed=2.9,
                mega_chunk_vs_hf_memory=0.4,
                mega_vs_hf_memory=0.6,
                mega_chunk_vs_transformer_math_speed=6.0,
                mega_chunk_vs_transformer_speed=1.5,
                pathx_peak_gib=15.0,
                pathx_batch=2,
            ),
            ["yes", "no", "yes", "no", "yes", "yes"],
        ),
        (dict(mega_chunk_vs_transformer_math_speed=5.0), ["no"]),
    ],
)
def test_targets_compare_each_ratio_with_the_gpu_targets(summary, met):
    rows = report.targets(summary)
    assert [ok for _, _, ok in rows] == met
    if "mega_chunk_vs_transformer_speed" in summary:
        assert any("vs XFM‡ with SDPA/flash: 1.50×" in result for _, result, _ in rows)


def test_markdown_lists_targets_for_a_card_only():
    run = dict(
        machine=dict(gpu="NVIDIA H100", torch="2.11", git_sha=None),
        args=dict(dtype="bfloat16", size="text", batch_size=25, repeats=3, warmup=1, rounds=1),
        rows=[],
        summary=dict(mega_chunk_vs_hf_speed=4.0),
        notes=[],
    )
    assert "## GPU targets (on this card)" in report.markdown(run)
    run["machine"] = dict(cpu="x", threads=2, torch="2.13", git_sha=None)
    run["args"]["threads"] = 2
    assert "targets" not in report.markdown(run)
