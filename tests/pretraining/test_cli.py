"""Both stages through the CLI as users run them (`python -m mega_lra.train` subprocesses):
pretraining, fine-tuning from its run dir, refusals, the records both leave, the SPT table;
plus the options that tie the stages (budgets, compute-matched controls, nested subsets)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from mega_lra.pretraining.stages import apply_step_options, configure_pretrain
from mega_lra.training.checkpoint_files import load_checkpoint
from mega_lra.training.config import compose
from tests.helpers import run_module, tiny
from tests.training.helpers import run_overrides, write_all

MODEL = "mega_chunk"


def args(data: Path, run_dir: Path, *extra: str, steps: int = 4, model: str = MODEL) -> list[str]:
    return [
        "task=listops",
        f"model={model}",
        *tiny(model),
        *run_overrides(data, steps=steps),
        "trainer.val_check_interval=2",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def in_process(argv: list[str]) -> list[str]:
    """The CLI arguments without the run dir (compose takes it apart)."""
    return [a for a in argv if not a.startswith("hydra.run.dir=")]


def csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_all(tmp_path_factory.mktemp("spt-data"), {"train": 12, "val": 6, "test": 6})


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("spt") / "pre"
    done = run_module("mega_lra.train", *args(data, run, "stage=pretrain"))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def finetuned(data, pretrained, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("spt") / "ft"
    done = run_module("mega_lra.train", *args(data, run, f"pretrained={pretrained}", steps=3))
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def test_pretraining_leaves_its_record_and_the_best_checkpoint_by_the_masked_metric(pretrained):
    record = json.loads((pretrained / "pretrain.json").read_text())
    assert not (pretrained / "results.json").exists()  # never read as a classification run
    assert record["stage"] == "pretrain" and record["steps"] == 4
    assert record["objective"]["kind"] == "masked" and record["objective"]["rate"] == 0.10
    assert record["monitor"] == "val/masked_acc"
    rows = csv_rows(pretrained)
    logged = [float(r["val/masked_acc"]) for r in rows if r.get("val/masked_acc")]
    assert logged and record["best_val_metric"] == pytest.approx(max(logged))
    assert "test/masked_acc" in rows[-1] and "train/masked_acc" in rows[0]
    best = load_checkpoint(pretrained / "checkpoints" / "best.ckpt")
    assert best["spt"]["best_val_metric"] == pytest.approx(max(logged[: len(logged)]))
    cfg = (pretrained / "config.yaml").read_text()
    assert "objective: masked" in cfg and "mask_rate: 0.1" in cfg  # what ran, resolved


def test_fine_tuning_loads_the_backbone_and_starts_fresh_at_step_0(data, pretrained, finetuned):
    results = json.loads((finetuned / "results.json").read_text())
    spt = results["spt"]
    best = pretrained / "checkpoints" / "best.ckpt"
    assert spt["role"] == "finetuned" and Path(spt["pretrain_run"]) == pretrained
    assert spt["checkpoint_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert (spt["objective"], spt["mask_rate"], spt["loss"]) == ("masked", 0.1, "ce")
    assert (spt["pretrain_steps"], spt["finetune_steps"], spt["total_steps"]) == (4, 3, 7)
    assert results["steps"] == 3  # fine-tuning's own counter, from 0: not a resume
    steps = sorted({int(r["step"]) for r in csv_rows(finetuned) if r.get("train/loss")})
    assert steps[0] == 0
    lr = [float(r["train/lr/default"]) for r in csv_rows(finetuned) if r.get("train/lr/default")]
    assert lr[0] < 1e-6  # a fresh warm-up (init_lr 1e-7), not the pretraining run's lr
    # the fine-tuning run's own first checkpoint holds a fresh optimiser state
    last = load_checkpoint(finetuned / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 3


def test_every_backbone_tensor_equals_the_checkpoints_after_loading(data, pretrained, tmp_path):
    from mega_lra.models import build_model
    from mega_lra.pretraining.transfer import load_pretrained

    cfg = compose(in_process(args(data, tmp_path)))
    model = build_model(cfg)
    load_pretrained(model, pretrained)
    saved = load_checkpoint(pretrained / "checkpoints" / "best.ckpt")["state_dict"]
    mine = model.state_dict()
    body = [k for k in mine if not k.startswith("classifier.")]
    assert any(k.startswith("backbone.") for k in body)
    for k in body:
        assert torch.equal(mine[k], saved[f"model.{k}"]), k


def test_a_different_architecture_is_refused_with_every_key_named(data, pretrained, tmp_path):
    done = run_module(
        "mega_lra.train",
        *args(data, tmp_path / "x", f"pretrained={pretrained}", "model.num_hidden_layers=2"),
    )
    assert done.returncode == 2
    assert "architecture: num_hidden_layers 1 pretrained, 2 here" in done.stderr
    assert "missing from the checkpoint: backbone.layers.1." in done.stderr
    assert not (tmp_path / "x" / "results.json").exists()


def test_the_objective_must_fit_the_backbones_direction(data, tmp_path):
    done = run_module(
        "mega_lra.train", *args(data, tmp_path / "x", "stage=pretrain", "spt.objective=causal")
    )
    assert done.returncode == 2 and "bidirectional backbone" in done.stderr
    cfg = compose(in_process(args(data, tmp_path / "y", "stage=pretrain", "spt.mask_rate=0")))
    with pytest.raises(ValueError, match="spt.mask_rate=0"):  # not turned into classification
        configure_pretrain(cfg)


def test_a_finished_pretraining_run_is_kept_and_resume_changes_nothing(data, pretrained):
    from mega_lra.training.run_dir import RunDirError
    from mega_lra.training.runner import train

    before = (pretrained / "pretrain.json").read_bytes()
    with pytest.raises(RunDirError, match="pretrain.json from a finished run"):
        train(compose(in_process(args(data, pretrained, "stage=pretrain")), run_dir=pretrained))
    resumed = run_module("mega_lra.train", *args(data, pretrained, "stage=pretrain", "resume=true"))
    assert resumed.returncode == 0 and "nothing to do" in resumed.stdout
    assert (pretrained / "pretrain.json").read_bytes() == before


def test_the_spt_table_puts_scratch_and_self_pretrained_side_by_side(data, finetuned, tmp_path):
    from mega_lra.training.runner import train

    scratch = tmp_path / "runs" / "scratch"
    train(compose(in_process(args(data, scratch)), run_dir=scratch))
    shutil.copytree(finetuned, tmp_path / "runs" / "ft")
    done = run_module("mega_lra.table", str(tmp_path / "runs"), "--table", "spt")
    assert done.returncode == 0, done.stderr
    assert "Mega-chunk, from scratch" in done.stdout
    assert "Mega-chunk, SPT (masked 0.1) + FT" in done.stdout
    assert "4+3" in done.stdout  # pretraining + fine-tuning steps beside the scratch run's
    lra = run_module("mega_lra.table", str(tmp_path / "runs"), "--table", "lra")
    assert "SPT" not in lra.stdout  # the classification tables leave SPT runs out


def test_step_budgets_split_between_the_stages_and_a_control_matches_the_total(pretrained):
    budget = ["spt.budget_steps=10", "spt.pretrain_share=0.4"]
    for stage, extra, steps in [
        ("pretrain", [], 4),
        ("finetune", [f"pretrained={pretrained}"], 6),
        ("finetune", ["spt.pretrain_share=0"], 10),
    ]:
        cfg = compose([f"stage={stage}", *budget, *extra])
        apply_step_options(cfg, stage)
        assert cfg.trainer.max_steps == steps and cfg.trainer.max_epochs is None
    with pytest.raises(ValueError, match="set pretrained="):
        apply_step_options(compose(budget), "finetune")
    cfg = compose([f"spt.match_steps_of={pretrained}", "trainer.max_steps=3"])
    info = apply_step_options(cfg, "finetune")
    assert cfg.trainer.max_steps == 3 + 4 and info["role"] == "compute_matched"
