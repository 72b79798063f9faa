"""`train(cfg)` and `evaluate(...)`: everything between a composed config and `results.json`.

The entry points (`mega_lra.train`, `mega_lra.eval`) only compose configs and call these; tests
call them in-process with `hydra.compose`d configs.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from mega_lra.atomic_files import write_json, write_text
from mega_lra.models import build_classifier, count_parameters
from mega_lra.pretraining.model import PretrainModel, random_init
from mega_lra.pretraining.module import PretrainModule
from mega_lra.pretraining.objectives import resolve_objective
from mega_lra.pretraining.record import write_pretrain_record
from mega_lra.pretraining.stages import (
    apply_step_options,
    configure_pretrain,
    group_view,
    random_init_std,
    run_compare,
    spt_node,
    stage_of,
)
from mega_lra.pretraining.transfer import load_pretrained, model_facts, read_pretrained
from mega_lra.results.record import Results
from mega_lra.training.checkpoint_files import AtomicCheckpointIO, load_checkpoint
from mega_lra.training.distributed import cluster_plugins, prepare_model_for_processes
from mega_lra.training.module import LRAModule
from mega_lra.training.norm_sequences import announce_norm_sequences
from mega_lra.training.run_dir import (
    CONFIG,
    LAST,
    RESULTS,
    RunDirError,
    finished_record,
    git_sha,
    group_differences,
    group_hash,
    read_results,
    run_state,
    world_size,
)
from tasks.base import Task
from tasks.datamodule import LRADataModule


@dataclass
class Setup:
    """What a run is built from (shared by train and eval)."""

    task: Task
    model: torch.nn.Module
    datamodule: LRADataModule


def choices_of(cfg: DictConfig) -> dict[str, str | None]:
    """The chosen config names (`task`, `model`, `experiment`) recorded in `cfg.run`."""
    run = cfg.get("run") or {}
    return {k: run.get(k) for k in ("task", "model", "experiment")}


def build(cfg: DictConfig, *, progress: bool = True) -> Setup:
    """Task, classifier (a `PretrainModel` around it for `stage=pretrain`) and data module of a
    config; the data is prepared (or found cached)."""
    task = instantiate(cfg.task)
    model = build_classifier(cfg.model, task)
    pretrain = stage_of(cfg) == "pretrain"
    if pretrain:
        model = PretrainModel(model, resolve_objective(spt_node(cfg), task, model.backbone))
    std = random_init_std(cfg)
    if std is not None:  # the random-init ablation: before any pretrained weights are loaded
        random_init(model, std)
    loader = OmegaConf.to_container(cfg.loader, resolve=True)
    datamodule = LRADataModule(
        task,
        OmegaConf.to_container(cfg.paths, resolve=True),
        pad_to_multiple_of=getattr(model, "pad_multiple", 0),
        seed=int(cfg.seed),
        progress=progress,
        row_index=pretrain,
        **loader,
    )
    datamodule.prepare_data()
    datamodule.setup()
    return Setup(task, model, datamodule)


def apply_effective_batch(cfg: DictConfig) -> None:
    """`effective_batch_size` -> `trainer.accumulate_grad_batches` for this device count."""
    target = cfg.get("effective_batch_size")
    if not target:
        return
    per_step = int(cfg.loader.batch_size) * world_size(cfg.trainer)
    if target % per_step:
        raise ValueError(
            f"effective_batch_size={target} is not a multiple of loader.batch_size "
            f"({cfg.loader.batch_size}) x devices ({world_size(cfg.trainer)}) = {per_step}. "
            "Fix: change loader.batch_size or trainer.devices so that it divides"
        )
    cfg.trainer.accumulate_grad_batches = target // per_step


def derive_total_steps(cfg: DictConfig, train_rows: int) -> int:
    """`sched.total_steps`, else `trainer.max_steps`, else epochs x updates per epoch."""
    if cfg.sched.get("total_steps"):
        return int(cfg.sched.total_steps)
    max_steps = cfg.trainer.get("max_steps") or -1
    if max_steps > 0:
        return int(max_steps)
    epochs = cfg.trainer.get("max_epochs")
    if not epochs or epochs < 0:
        raise ValueError(
            "the lr schedule needs a length: set trainer.max_steps, trainer.max_epochs or "
            "sched.total_steps"
        )
    batches = math.ceil(train_rows / (int(cfg.loader.batch_size) * world_size(cfg.trainer)))
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and limit >= 1:
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    return int(epochs) * max(math.ceil(batches / accumulate), 1)


def _instantiate_dict(node: DictConfig | None, **extra: Any) -> list[Any]:
    """Objects of a dict of named `_target_` entries (`callbacks`, `logger`); an entry without
    `_target_` is an error, not silently skipped."""
    out = []
    for name, entry in (node or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(f"config entry {name!r} has no _target_: {entry}")
        kwargs = {k: v for k, v in extra.items() if k in entry}
        out.append(instantiate(entry, **kwargs))
    return out


def _loggers(cfg: DictConfig, resume_step: int | None, group: str) -> list[Any]:
    loggers = []
    for name, entry in (cfg.get("logger") or {}).items():
        if entry is None:
            continue
        if "_target_" not in entry:
            raise ValueError(f"logger entry {name!r} has no _target_: {entry}")
        kwargs: dict[str, Any] = {}
        if entry._target_.endswith("ResumableCSVLogger"):
            kwargs["resume_step"] = resume_step
        if entry._target_.endswith("WandbLogger") and entry.get("group") is None:
            kwargs["group"] = group
        loggers.append(instantiate(entry, **kwargs))
    return loggers


def label_fractions(manifest: Mapping[str, Any], split: str) -> tuple[float, float]:
    """(chance = 1 / classes, majority-class fraction) of a split."""
    counts = manifest["splits"][split]["labels"]
    total = sum(counts.values()) or 1
    return 1.0 / len(counts), max(counts.values()) / total


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test one run into `cfg.run_dir`; returns `results.json`'s content
    (`pretrain.json`'s for `stage=pretrain`; `comparison.json`'s for `stage=compare`)."""
    stage = stage_of(cfg)
    if stage == "compare":
        return run_compare(cfg, train)
    run_dir = Path(cfg.run_dir)
    state = run_state(run_dir, bool(cfg.resume))
    if state == "finished":
        done = finished_record(run_dir)
        print(f"[mega-lra] {run_dir} is finished ({done.name} exists); nothing to do")
        if done.name == RESULTS:
            return read_results(run_dir).to_dict()
        import json

        return json.loads(done.read_text())

    random_init_std(cfg)  # refuse a wrong value before the run dir is touched
    step_info = apply_step_options(cfg, stage)
    if stage == "pretrain":
        configure_pretrain(cfg)
    pretrained = read_pretrained(cfg.pretrained) if cfg.get("pretrained") else None
    apply_effective_batch(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if state == "resume" and (run_dir / CONFIG).is_file():
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG))
        changed = group_differences(saved, resolved)
        if changed:
            raise RunDirError(
                f"resume=true: the config differs from {run_dir / CONFIG} in {changed}; resuming "
                "would mix two experiments. Resume with the original overrides, or start a new "
                "run dir"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if state == "fresh":
        write_text(run_dir / CONFIG, OmegaConf.to_yaml(OmegaConf.create(resolved)))
    group = group_hash(group_view(resolved, pretrained.group if pretrained else None))

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    setup = build(cfg, progress=bool(cfg.get("progress", True)))
    built = setup.datamodule.built
    total_steps = derive_total_steps(cfg, len(built.dataset["train"]))
    spt_record = None
    if stage == "pretrain":
        module: LRAModule = PretrainModule(
            setup.model,
            instantiate(cfg.optim),
            instantiate(cfg.sched) if cfg.get("sched") else None,
            objective=setup.model.objective,
            seed=int(cfg.seed),
            eval_mask_seed=int(spt_node(cfg).get("eval_mask_seed") or 0),
            normalization=built.manifest.get("normalization"),
            total_steps=total_steps,
            run_config=resolved,
            spt_info={
                "model": model_facts(setup.model),
                "group": group,
                "task": setup.task.name,
                "data_manifest": built.manifest_sha256,
                "train_fraction": float(setup.task.train_fraction),
                "seed": int(cfg.seed),
            },
        )
    else:
        module = LRAModule(
            setup.model,
            instantiate(cfg.optim),
            instantiate(cfg.sched) if cfg.get("sched") else None,
            num_classes=setup.task.num_classes,
            total_steps=total_steps,
            run_config=resolved,
        )
        if pretrained is not None:  # weights only, and only into a fresh run (resume restores)
            spt_record = load_pretrained(
                setup.model, pretrained, data_manifest=built.manifest_sha256, copy=state == "fresh"
            )
        if step_info or spt_record:
            spt_record = {**(spt_record or {"role": "from_scratch"}), **step_info}
            spt_record["train_fraction"] = float(setup.task.train_fraction)

    resume_step = None
    ckpt_path = cfg.get("ckpt_path")
    if state == "resume":
        ckpt_path = str(run_dir / LAST)
        resume_step = int(load_checkpoint(ckpt_path)["global_step"])
        print(f"[mega-lra] resuming {run_dir} from {ckpt_path} (step {resume_step})")
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = _loggers(cfg, resume_step, group)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        default_root_dir=str(run_dir),
    )
    prepare_model_for_processes(setup.model, trainer.world_size, trainer.strategy.root_device.type)
    announce_norm_sequences(cfg, trainer.world_size, trainer.is_global_zero)
    params = count_parameters(setup.model)
    data_hash = built.manifest_sha256
    info = {
        "git_sha": git_sha(),
        "data_source": built.source,
        "data_manifest": data_hash,
        "params": params,
        "group": group,
    }
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, **info})

    try:
        trainer.fit(module, datamodule=setup.datamodule, ckpt_path=ckpt_path)
        train_seconds = module.train_seconds
        best = next(
            (c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None
        )
        best_path = best.best_model_path if best is not None else ""
        test_ckpt = best_path if best_path else str(run_dir / LAST)
        if not Path(test_ckpt).is_file():
            test_ckpt = None
        best_val = module.best_val_accuracy
        tested = trainer.test(
            module, datamodule=setup.datamodule, ckpt_path=test_ckpt, verbose=False
        )
    finally:
        _finish_wandb()
    choices = choices_of(cfg)
    if stage == "pretrain":
        return _pretrain_results(cfg, trainer, module, setup, tested, test_ckpt, info, run_dir)
    test_accuracy = float(tested[0]["test/acc"]) if tested else None
    if spt_record is not None:
        steps = int(trainer.global_step)
        before = int(spt_record.get("pretrain_steps") or 0)
        spt_record.update(finetune_steps=steps, total_steps=before + steps)
    record = Results(
        task=choices["task"] or setup.task.name,
        model=choices["model"] or setup.model.label,
        experiment=choices["experiment"],
        seed=int(cfg.seed),
        group=group,
        params=params,
        best_val_accuracy=best_val,
        test_accuracy=test_accuracy,
        val_is_test=bool(setup.task.val_is_test),
        steps=int(trainer.global_step),
        train_seconds=round(train_seconds, 3),
        git_sha=info["git_sha"],
        data_source=info["data_source"],
        data_manifest=data_hash,
        model_info=setup.model.describe(),
        test_checkpoint=None if test_ckpt is None else Path(test_ckpt).name,
        spt=spt_record,
    )
    results = record.to_dict()
    if trainer.is_global_zero:
        record.write(run_dir)
        print(summary(results, built.manifest, run_dir))
    return results


def _pretrain_results(cfg, trainer, module, setup, tested, test_ckpt, info, run_dir) -> dict:
    """Writes a pretraining run's `pretrain.json` and prints its summary; returns its content."""
    objective = module.objective
    metric = f"test/{objective.metric}"
    choices = choices_of(cfg)
    record = {
        "task": choices["task"] or setup.task.name,
        "model": choices["model"] or setup.model.label,
        "experiment": choices["experiment"],
        "seed": int(cfg.seed),
        "group": info["group"],
        "objective": objective.to_dict(),
        "monitor": objective.monitor,
        "best_val_metric": module.best_val_metric,
        "test_metric": float(tested[0][metric]) if tested else None,
        "steps": int(trainer.global_step),
        "train_seconds": round(module.train_seconds, 3),
        "params": info["params"],
        "train_fraction": float(setup.task.train_fraction),
        "git_sha": info["git_sha"],
        "data_source": info["data_source"],
        "data_manifest": info["data_manifest"],
        "model_info": setup.model.describe(),
        "best_checkpoint": None if test_ckpt is None else Path(test_ckpt).name,
    }
    if trainer.is_global_zero:
        write_pretrain_record(run_dir, record)
        name = objective.metric
        value = record["test_metric"]
        print(
            "\n".join(
                [
                    "",
                    f"== mega-lra self-pretraining: {record['experiment'] or record['task']} "
                    f"{record['model']} (seed {record['seed']}, data: {record['data_source']}) ==",
                    f"  objective {objective.kind} ({objective.target}, loss {objective.loss}"
                    + (f", mask rate {objective.rate}" if objective.rate else "")
                    + ")",
                    f"  best val {name} {module.best_val_metric}   test {name} {value}",
                    f"  steps {record['steps']}, fit time {record['train_seconds'] / 60:.1f} min",
                    f"  run dir {run_dir}  (fine-tune with pretrained={run_dir})",
                ]
            )
        )
    return record


def _finish_wandb() -> None:
    """Close a W&B run so the next run of an in-process multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def summary(results: Mapping[str, Any], manifest: Mapping[str, Any], run_dir: Path) -> str:
    chance, majority_val = label_fractions(manifest, "val")
    _, majority_test = label_fractions(manifest, "test")

    def pct(x: float | None) -> str:
        return "   n/a" if x is None else f"{100 * x:6.2f}%"

    val, test = results["best_val_accuracy"], results["test_accuracy"]
    ratio = "" if test is None or not majority_test else f"  ({test / majority_test:.2f}x majority)"
    minutes = results["train_seconds"] / 60
    return "\n".join(
        [
            "",
            f"== mega-lra: {results['experiment'] or results['task'] + '-' + results['model']} "
            f"(seed {results['seed']}, data: {results['data_source']}) ==",
            f"  best val accuracy {pct(val)}   (majority class {pct(majority_val)}, "
            f"chance {pct(chance)})",
            f"  test accuracy     {pct(test)}   (majority class {pct(majority_test)}){ratio}",
            f"  steps {results['steps']}, fit time {minutes:.1f} min, "
            f"{results['params']:,} parameters",
            f"  run dir {run_dir}",
        ]
    )


# ------------------------------------------------------------------------------------ eval
def evaluate(
    ckpt_path: str | Path,
    split: str = "test",
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on a split; config from the checkpoint, `overrides` on top
    (e.g. `paths.data_dir=...`, `loader.batch_size=...`). Writes and returns them."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}: expected train, val or test")
    checkpoint = load_checkpoint(ckpt_path)
    saved = (checkpoint.get("mega_lra") or {}).get("config")
    if "spt" in checkpoint:
        raise ValueError(
            f"{ckpt_path}: a self-pretraining checkpoint (stage=pretrain); its masked metric on "
            "val and test is in its run dir's pretrain.json. Evaluate a fine-tuned checkpoint, "
            "or fine-tune from this one with pretrained=<its run dir>"
        )
    if not saved:
        raise ValueError(f"{ckpt_path}: not a mega-lra training checkpoint (no saved config)")
    check_override_keys(saved, overrides, ckpt_path)
    cfg = OmegaConf.merge(OmegaConf.create(saved), OmegaConf.from_dotlist(list(overrides)))
    setup = build(cfg, progress=False)
    module = LRAModule(
        setup.model, lambda m: None, None, num_classes=setup.task.num_classes, run_config=saved
    )
    module.load_state_dict(checkpoint["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    # any split runs through the test loop (in order, nothing dropped)
    loader = setup.datamodule.eval_dataloader(split)
    metrics = trainer.test(module, dataloaders=loader, verbose=False)[0]
    acc, loss = metrics["test/acc"], metrics["test/loss"]
    built = setup.datamodule.built
    result = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "accuracy": float(acc),
        "loss": float(loss),
        "rows": built.manifest["splits"][split]["rows"],
        "step": int(checkpoint.get("global_step", 0)),
        "data_source": built.source,
        "data_manifest": built.manifest_sha256,
        "seconds": round(time.perf_counter() - start, 3),
    }
    target = Path(out) if out else _eval_path(ckpt_path, split)
    write_json(target, result)
    result["written_to"] = str(target)
    return result


def check_override_keys(
    saved: Mapping[str, Any], overrides: Sequence[str], ckpt_path: Path
) -> None:
    """Each `key=value` override must name a key of the checkpoint's saved config: a typo
    (`loader.batchsize=8`) is an error naming it, not a key that silently does nothing."""
    for arg in overrides:
        key = arg.partition("=")[0]
        node: Any = saved
        walked: list[str] = []
        for part in key.split("."):
            if not isinstance(node, Mapping):
                raise ValueError(
                    f"override {arg!r}: {'.'.join(walked)} is a value, not a group, in the "
                    f"config saved in {ckpt_path}"
                )
            if part not in node:
                where = ".".join(walked) or "the top level"
                raise ValueError(
                    f"override {arg!r}: the config saved in {ckpt_path} has no key {key!r}; "
                    f"expected one of {where}'s keys: {', '.join(sorted(map(str, node)))}"
                )
            node = node[part]
            walked.append(part)


def _eval_path(ckpt_path: Path, split: str) -> Path:
    """`<run dir>/eval/<ckpt>-<split>.json`, numbered so no earlier result is overwritten."""
    run_dir = (
        ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    )
    folder = run_dir / "eval"
    path = folder / f"{ckpt_path.stem}-{split}.json"
    k = 1
    while path.exists():
        k += 1
        path = folder / f"{ckpt_path.stem}-{split}-{k}.json"
    return path
