"""Training end to end on every task's official layout (tiny models): results.json, the best
checkpoint, determinism, refusing to overwrite, the guards, loggers and precision options."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mega_lra.models import build_model, count_parameters
from mega_lra.models.catalog import model_config, model_names
from mega_lra.models.classifier import import_backbone
from mega_lra.training.callbacks import NonFiniteLossError
from mega_lra.training.config import compose
from mega_lra.training.run_dir import RunDirError, group_hash
from mega_lra.training.runner import apply_effective_batch, evaluate, train
from tasks.datamodule import LRADataModule
from tests.helpers import tiny
from tests.training.helpers import TASKS, run_overrides

RESULT_KEYS = {
    "task", "model", "experiment", "seed", "group", "attention_activation", "chunk_size",
    "ema_projection_size", "normalization_type", "params", "best_val_accuracy", "test_accuracy",
    "val_is_test", "steps", "train_seconds", "git_sha", "data_source", "data_manifest",
}  # fmt: skip
LONG = {"pathx", "sc_raw"}  # 16K-long inputs


def fit(data_dir: Path, run_dir: Path, task: str, model: str, *extra: str, steps: int = 2):
    cfg = compose(
        [f"task={task}", f"model={model}", *tiny(model), *run_overrides(data_dir, steps), *extra],
        run_dir=run_dir,
    )
    return cfg, train(cfg)


# every model in conf/model/ (found there, so a new model is in without an edit) on every task,
# except Mega's full attention at 16K (plain Mega and Mega with the S4D kernel) and the attention
# baselines whose cost is quadratic (`quadratic = True` on the backbone: LRA's Transformer, the
# Synthesizer, the Sparse Transformer): 40 s to 3 min each at 16K on CPU; their layers are tested
# in tests/layers and tests/models
QUADRATIC_AT_16K = {
    m
    for m in model_names()
    if model_config(m)["backbone"].endswith(".MegaBackbone") and not model_config(m)["use_chunking"]
} | {
    m
    for m in model_names()
    if getattr(import_backbone(model_config(m)["backbone"]), "quadratic", False)
}
CASES = [(t, m) for t in TASKS for m in model_names() if not (t in LONG and m in QUADRATIC_AT_16K)]


@pytest.mark.parametrize(
    "task,model",
    [pytest.param(t, m, marks=pytest.mark.slow) if t in LONG else (t, m) for t, m in CASES],
)
def test_two_steps_on_every_task_from_its_official_layout(lra_data, tmp_path, task, model):
    cfg, results = fit(lra_data, tmp_path / "run", task, model, "trainer.limit_val_batches=1")
    run = tmp_path / "run"
    assert set(results) >= RESULT_KEYS
    assert json.loads((run / "results.json").read_text()) == results
    assert (results["task"], results["model"], results["experiment"]) == (task, model, None)
    assert results["steps"] == 2 and results["data_source"] == "files"
    assert 0.0 <= results["best_val_accuracy"] <= 1.0 and 0.0 <= results["test_accuracy"] <= 1.0
    assert results["params"] == count_parameters(build_model(cfg))
    info = build_model(cfg).describe()
    assert results["model_info"] == info  # what the backbone says it is
    assert results["chunk_size"] == info.get("chunk_size")
    assert results["val_is_test"] == (task == "text")
    assert (run / "checkpoints" / "best.ckpt").is_file() and (
        run / "checkpoints" / "last.ckpt"
    ).is_file()
    assert "${" not in (run / "config.yaml").read_text()  # resolved


def test_results_are_fractions_at_the_best_checkpoint_and_eval_agrees(lra_data, tmp_path):
    run = tmp_path / "run"
    cfg, results = fit(lra_data, run, "listops", "mega_chunk", "loader.batch_size=4", steps=9)
    # recompute the test accuracy of best.ckpt without Lightning, from the raw split
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    model = build_model(cfg)
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    model.eval()
    dm = LRADataModule(instantiate(cfg.task), cfg.paths, batch_size=5, pad_to_multiple_of=16)
    dm.setup()
    correct = total = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():  # batch 5 on 6 rows: the last partial batch counts
            correct += int((model(batch).argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    assert total == 6
    assert results["test_accuracy"] == pytest.approx(correct / total)
    assert ckpt["mega_lra"]["best_val_accuracy"] == results["best_val_accuracy"]
    assert results["test_checkpoint"] == "best.ckpt"
    # the eval entry point on the same checkpoint gives the same number and never overwrites
    first = evaluate(run / "checkpoints" / "best.ckpt", "test")
    second = evaluate(run / "checkpoints" / "best.ckpt", "test")
    assert first["accuracy"] == pytest.approx(results["test_accuracy"])
    assert first["written_to"] != second["written_to"]
    assert json.loads(Path(first["written_to"]).read_text())["accuracy"] == first["accuracy"]


def test_same_seed_gives_identical_runs_and_the_group_ignores_the_seed(lra_data, tmp_path):
    args = ("listops", "mega_chunk", "model.dropout_prob=0.3")
    _, a = fit(lra_data, tmp_path / "a", *args, steps=6)
    _, b = fit(lra_data, tmp_path / "b", *args, steps=6)
    _, c = fit(lra_data, tmp_path / "c", *args, "seed=7", steps=6)
    _, d = fit(lra_data, tmp_path / "d", *args, "optim.lr=0.002", steps=6)
    drop = {"train_seconds"}
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }
    wa = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    wc = torch.load(tmp_path / "c/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)  # the seed matters...
    assert c["group"] == a["group"] != d["group"]  # ...but not for the group


def test_a_finished_run_dir_is_never_overwritten(lra_data, tmp_path):
    run = tmp_path / "run"
    fit(lra_data, run, "listops", "mega_chunk")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="already holds results.json"):
        fit(lra_data, run, "listops", "mega_chunk")
    again = fit(lra_data, run, "listops", "mega_chunk", "resume=true")[1]  # no-op, same results
    assert again == json.loads((run / "results.json").read_text())
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    (run / "results.json").unlink()  # an unfinished run with checkpoints: only resume=true
    with pytest.raises(RunDirError, match="checkpoints of an unfinished run"):
        fit(lra_data, run, "listops", "mega_chunk")


def test_resume_refuses_a_different_experiment(lra_data, tmp_path):
    run = tmp_path / "run"
    fit(lra_data, run, "listops", "mega_chunk")
    (run / "results.json").unlink()
    with pytest.raises(RunDirError, match=r"optim\.lr"):
        fit(lra_data, run, "listops", "mega_chunk", "resume=true", "optim.lr=0.5")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(lra_data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="non-finite") as err:
        fit(
            lra_data,
            run,
            "listops",
            "mega_chunk",
            "optim.lr=1e30",
            "sched.warmup_steps=0",
            "trainer.gradient_clip_val=null",
            "callbacks.last_checkpoint.every_n_train_steps=1",
            steps=6,
        )
    last = run / "checkpoints" / "last.ckpt"
    assert str(last) in str(err.value)
    state = torch.load(last, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not (run / "results.json").exists()


def test_stuck_at_chance_warns(lra_data, tmp_path):
    with pytest.warns(UserWarning, match="stuck at chance"):
        fit(
            lra_data,
            tmp_path / "run",
            "listops",
            "mega_chunk",
            "optim.lr=1e-9",
            "trainer.val_check_interval=1",
            "callbacks.stuck_at_chance.patience=2",
            "callbacks.stuck_at_chance.margin=1.0",
            steps=3,
        )


def test_default_logger_writes_wandb_offline_beside_the_csv(lra_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    cfg = compose(
        ["task=listops", "model=mega_chunk", *tiny("mega_chunk"), *run_overrides(lra_data)]
        + ["logger=default"],
        run_dir=run,
    )
    results = train(cfg)
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
    rows = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/loss" in rows[0] and len(rows) > 2
    assert results["steps"] == 2


def test_bf16_autocast_and_effective_batch(lra_data, tmp_path):
    cfg, results = fit(
        lra_data,
        tmp_path / "run",
        "listops",
        "mega_chunk",
        "trainer.precision=bf16-mixed",
        "effective_batch_size=4",  # batch 2 -> accumulate 2
        steps=3,
    )
    assert cfg.trainer.accumulate_grad_batches == 2
    assert results["steps"] == 3  # optimiser steps, not batches
    assert math.isfinite(results["test_accuracy"])


def test_max_steps_mid_epoch_still_validates_the_final_weights(lra_data, tmp_path):
    run = tmp_path / "run"
    # 12 training rows at batch 2: 6 steps per epoch; stop at 4
    fit(lra_data, run, "listops", "mega_chunk", steps=4)
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    val_steps = [int(r["step"]) for r in rows if r.get("val/acc")]
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert val_steps and max(val_steps) >= max(train_steps)


def test_the_train_loader_is_resumable_and_eval_loaders_keep_every_row(lra_data):
    from torchdata.stateful_dataloader import StatefulDataLoader

    cfg = compose(["task=listops", *run_overrides(lra_data)])
    dm = LRADataModule(instantiate(cfg.task), cfg.paths, batch_size=5, drop_last=True)
    dm.setup()
    assert isinstance(dm.train_dataloader(), StatefulDataLoader)
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert sum(len(b["labels"]) for b in loader) == 6  # 5 + 1: the partial batch is kept


def test_group_hash_ignores_seed_paths_and_logging_only():
    base = {"seed": 1, "paths": {"data_dir": "a"}, "optim": {"lr": 1.0}, "logger": {"x": 1}}
    same = {"seed": 2, "paths": {"data_dir": "b"}, "optim": {"lr": 1.0}, "logger": None}
    other = {"seed": 1, "paths": {"data_dir": "a"}, "optim": {"lr": 2.0}}
    assert group_hash(base) == group_hash(same) != group_hash(other)


def test_the_same_recipe_on_one_or_eight_devices_is_one_group():
    cfgs = [compose(["experiment=lra/mega/pathx", f"trainer.devices={n}"]) for n in (1, 8, 4)]
    for cfg in cfgs:
        apply_effective_batch(cfg)
    one, eight, four = (OmegaConf.to_container(c, resolve=True) for c in cfgs)
    assert (
        one["trainer"]["accumulate_grad_batches"],
        eight["trainer"]["accumulate_grad_batches"],
    ) == (8, 1)
    assert group_hash(one) == group_hash(eight) == group_hash(four)
    smaller = dict(one, trainer={**one["trainer"], "accumulate_grad_batches": 4})
    assert group_hash(smaller) != group_hash(one)  # a different update batch is another recipe


def test_synthesizer_random_mode_at_16k_is_refused_by_name():
    """`model=synthesizer task=pathx` as the model file has it (random R: 2 x 16384^2 parameters
    per layer at the tiny width) gives one error naming the field and the way out."""
    cfg = compose(["task=pathx", "model=synthesizer", *tiny("synthesizer")])
    with pytest.raises(ValueError, match="model.synthesizer_mode=random at max_length=16384"):
        build_model(cfg)
