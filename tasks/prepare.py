"""``python -m tasks.prepare task=NAME [paths.data_dir=DIR] [task.KEY=VALUE ...]``

Composes ``conf/prepare.yaml`` (the same ``conf/`` tree as training), optionally downloads the
raw archive (``download=true``), builds or finds the task's cache, prints per-split counts and
label balance, and prints as its LAST stdout line one JSON object::

    {"task": ..., "source": ..., "splits": {"train": {"rows": N, "labels": {"0": n0, ...}},
     "val": ..., "test": ...}, "dropped": {"reason": count}, "manifest": PATH}

Bad data exits with status 2 and one message naming the file/line and the fix (no traceback).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tasks.base import Built, Paths, Task
from tasks.errors import DataError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: Sequence[str] = (), config_name: str = "prepare") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra command-line style overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def make_task(task_cfg: DictConfig | dict[str, Any]) -> Task:
    """Instantiate a ``conf/task/*.yaml`` node into its task object."""
    return instantiate(task_cfg)


def load_task(name: str, overrides: Sequence[str] = ()) -> Task:
    """The task object of ``conf/task/<name>.yaml`` with ``task.*`` overrides applied."""
    cfg = compose_config([f"task={name}", *overrides])
    return make_task(cfg.task)


def summary(built: Built) -> str:
    """Human-readable counts and label balance."""
    rep = built.report()
    lines = [f"task {rep['task']} (source: {rep['source']}, cached: {built.cached})"]
    for split, info in rep["splits"].items():
        total = max(info["rows"], 1)
        bal = " ".join(f"{k}:{v / total:.0%}" for k, v in info["labels"].items())
        lines.append(f"  {split:5s} {info['rows']:8d} rows  labels {bal}")
    if rep["dropped"]:
        lines.append("  dropped: " + ", ".join(f"{k}={v}" for k, v in rep["dropped"].items()))
    notes = built.manifest.get("notes") or {}
    if notes:
        lines.append("  notes: " + ", ".join(f"{k}={v}" for k, v in notes.items()))
    lines.append(f"  data identity (manifest sha256): {built.manifest_sha256}")
    lines.append(f"  manifest: {rep['manifest']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = compose_config(argv)
        task = make_task(cfg.task)
    except (HydraException, DataError) as e:
        msg = str(e.__cause__) if isinstance(e.__cause__, DataError) else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    paths = Paths.coerce(OmegaConf.to_container(cfg.paths, resolve=True))
    try:
        if cfg.download:
            from tasks.download import fetch

            print(fetch(task.name, paths.data_dir, progress=cfg.progress), file=sys.stderr)
        built = task.build(paths, progress=cfg.progress, rebuild=cfg.rebuild)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(built))
    print(json.dumps(built.report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
