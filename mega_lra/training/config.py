"""Composing the training config (`conf/train.yaml`) outside the CLI: notebooks, tests, sweeps.

`compose(["experiment=demo/listops", "seed=2"], run_dir="runs/x")` returns the same config that
`python -m mega_lra.train experiment=demo/listops seed=2 hydra.run.dir=runs/x` runs, with
`run_dir` and the chosen config names (`run.task`, `run.model`, `run.experiment`) filled in as
the entry point fills them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run_name(experiment: str | None, task: str, model: str) -> str:
    """The run dir's folder under `paths.runs_dir`: the experiment name, else `<task>-<model>`."""
    if experiment not in (None, "None", "null", ""):
        return str(experiment)
    return f"{task}-{model}"


def sqlite_url(path: str) -> str:
    """`sqlite:///<absolute path>` (an Optuna study's storage); the file's folder is created,
    since SQLite creates the file but not its folder."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name)
    if not OmegaConf.has_resolver("sqlite_url"):
        OmegaConf.register_new_resolver("sqlite_url", sqlite_url)


def fill_run_info(cfg: DictConfig, choices: Mapping[str, str | None], run_dir: str | Path) -> None:
    """Record the run dir and the chosen config names in `cfg` (what `results.json` reports)."""
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
        for key in ("task", "model", "experiment"):
            cfg.run[key] = choices.get(key)


def compose(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> DictConfig:
    """`conf/train.yaml` with Hydra command-line overrides, as the training CLI composes it."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    fill_run_info(cfg, choices, run_dir if run_dir is not None else "")
    return cfg
