"""``python -m mega_lra.train [experiment=NAME] [task=NAME] [model=NAME] [key=value ...]``

Composes `conf/train.yaml` with Hydra, then `mega_lra.training.runner.train` fits, validates and
tests one run into the run dir (`hydra.run.dir`) and writes its `results.json`. `-m` sweeps
(Hydra multirun) give one run dir per job under the sweep dir. Bad data, a run dir that must not
be overwritten, or a non-finite loss end with one message and exit status 2 (1 for the loss).
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from mega_lra.training.callbacks import NonFiniteLossError
from mega_lra.training.run_dir import RunDirError
from tasks.errors import DataError


def run_name(experiment: str | None, task: str, model: str) -> str:
    """The run dir's folder under `paths.runs_dir`: the experiment name, else `<task>-<model>`."""
    if experiment not in (None, "None", "null", ""):
        return str(experiment)
    return f"{task}-{model}"


if not OmegaConf.has_resolver("run_name"):
    OmegaConf.register_new_resolver("run_name", run_name)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from mega_lra.training.runner import train  # heavy imports after Hydra parsed the CLI

    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        cfg.run_dir = hydra_cfg.runtime.output_dir
        for key in ("task", "model", "experiment"):
            cfg.run[key] = hydra_cfg.runtime.choices.get(key)
    try:
        results = train(cfg)
    except (DataError, RunDirError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    return results.get("best_val_accuracy")  # what sweepers maximise


if __name__ == "__main__":
    main()
