"""The run directory: what may be written into it, `config.yaml`, and `results.json`.

Layout (`hydra.run.dir`): `config.yaml` (the resolved config), `checkpoints/{last,best}.ckpt`,
`csv/metrics.csv`, `wandb/` (offline runs), `.hydra/`, `results.json`, `eval/`. A run dir that
holds results (or checkpoints) is never written into again unless `resume=true`; a finished run
resumed changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mega_lra.results.record import Results
from mega_lra.results.record import read_results as read_record

RESULTS = "results.json"
CONFIG = "config.yaml"
LAST = Path("checkpoints") / "last.ckpt"
BEST = Path("checkpoints") / "best.ckpt"
# Keys that never change what a run computes: left out of the `group` hash, so runs that differ
# only in these (the seed above all) share a group.
NOT_IN_GROUP = (
    "seed",
    "paths",
    "resume",
    "ckpt_path",
    "logger",
    "callbacks",
    "progress",
    "run",
    "run_dir",
    "paper_norm_sequences",  # a fact about the paper's recipe (norm_sequences.py)
)
NOT_IN_GROUP_NESTED = {
    "loader": ("num_workers", "pin_memory", "batch_size"),
    "trainer": (
        "enable_progress_bar",
        "enable_model_summary",
        "log_every_n_steps",
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "accumulate_grad_batches",
    ),
}
# ... replaced by what they decide together: the batch of one optimiser update.
# Options that leave a run as it was when they hold these values (conf/train.yaml, the task
# files): left out of the group then, so a run without them hashes as before they existed.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "stage": "finetune",
    "pretrained": None,
    "spt": {
        "objective": "auto",
        "mask_rate": None,
        "pixel_loss": None,
        "eval_mask_seed": 0,
        "span_length": None,
        "random_init_std": None,
        "budget_steps": None,
        "pretrain_share": None,
        "match_steps_of": None,
        "pretrain_steps": None,
        "pretrain_lr": None,
        "compare_matched": False,
    },
}
OPTIONAL_TASK_DEFAULTS: dict[str, Any] = {"train_fraction": 1.0}
# Options added to a node after runs with it existed: left out of that node's part of the group
# while they hold these values, so those runs (a pretraining run's filled-in `spt`) hash as before.
OPTIONAL_NESTED_DEFAULTS: dict[str, dict[str, Any]] = {
    "spt": {"span_length": None, "random_init_std": None},
}


class RunDirError(RuntimeError):
    """The run dir cannot be used as asked (it holds results, or checkpoints without resume)."""


PRETRAIN_RESULTS = "pretrain.json"  # what a stage=pretrain run leaves instead of results.json


def finished_record(run_dir: Path) -> Path | None:
    """The file that marks a run dir finished: results.json, or a pretraining run's
    pretrain.json; None while unfinished."""
    for name in (RESULTS, PRETRAIN_RESULTS):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def run_state(run_dir: Path, resume: bool) -> str:
    """'fresh' (start), 'resume' (continue from last.ckpt) or 'finished' (nothing to do)."""
    done = finished_record(run_dir)
    finished = done is not None
    has_ckpt = (run_dir / LAST).is_file() or (run_dir / BEST).is_file()
    if resume:
        if finished:
            return "finished"
        return "resume" if (run_dir / LAST).is_file() else "fresh"
    if finished:
        raise RunDirError(
            f"{run_dir} already holds {done.name} from a finished run; refusing to overwrite it. "
            "Use a new run dir (omit hydra.run.dir for a fresh timestamped one), or resume=true "
            "to leave the finished run as it is"
        )
    if has_ckpt:
        raise RunDirError(
            f"{run_dir} holds checkpoints of an unfinished run; refusing to overwrite them. "
            "Continue it with resume=true, or choose another hydra.run.dir"
        )
    return "fresh"


def world_size(trainer: Mapping[str, Any]) -> int:
    """Processes of a `trainer` config: devices (a count or a list of ids; "auto" counts as 1)
    x nodes."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        n = len(devices)
    else:
        n = devices if isinstance(devices, int) and devices > 0 else 1
    return n * int(trainer.get("num_nodes", 1) or 1)


def update_batch(config: Mapping[str, Any]) -> int | None:
    """Samples per optimiser update: batch x processes x accumulation (None if unknown)."""
    loader, trainer = config.get("loader") or {}, config.get("trainer") or {}
    batch = loader.get("batch_size") if isinstance(loader, Mapping) else None
    if not isinstance(batch, int) or not isinstance(trainer, Mapping):
        return None
    return batch * world_size(trainer) * int(trainer.get("accumulate_grad_batches") or 1)


def _without_nested_defaults(key: str, value: Any) -> Any:
    """A node without its `OPTIONAL_NESTED_DEFAULTS` options that hold their defaults."""
    defaults = OPTIONAL_NESTED_DEFAULTS.get(key)
    if not defaults or not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if not (k in defaults and v == defaults[k])}


def _group_part(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config without seed, paths and bookkeeping (`NOT_IN_GROUP`), with the
    batch, device count and accumulation replaced by the batch of one update: the same recipe
    on 1 GPU or on 8 is one group."""
    core = {k: _without_nested_defaults(k, v) for k, v in config.items() if k not in NOT_IN_GROUP}
    core = {
        k: v
        for k, v in core.items()
        if not (k in OPTIONAL_DEFAULTS and v == _without_nested_defaults(k, OPTIONAL_DEFAULTS[k]))
    }
    if isinstance(core.get("task"), Mapping):
        core["task"] = {
            k: v
            for k, v in core["task"].items()
            if not (k in OPTIONAL_TASK_DEFAULTS and v == OPTIONAL_TASK_DEFAULTS[k])
        }
    for key, drop in NOT_IN_GROUP_NESTED.items():
        if isinstance(core.get(key), Mapping):
            core[key] = {k: v for k, v in core[key].items() if k not in drop}
    core["update_batch"] = update_batch(config)
    return core


def group_hash(config: Mapping[str, Any]) -> str:
    """Hash of the part of a resolved config that decides what a run computes, but the seed."""
    text = json.dumps(_group_part(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {"a.b.c": value}."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def group_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) in which two resolved configs differ, among those that enter the group."""

    fa, fb = flatten(_group_part(a)), flatten(_group_part(b))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def git_sha(cwd: Path | None = None) -> str | None:
    """Commit of the code (with '-dirty' when the tree has changes), or None outside git."""
    root = cwd or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def read_results(run_dir: Path) -> Results:
    """The run's `results.json` as its record (checked; a file from before schema 2 too)."""
    return read_record(run_dir / RESULTS)
