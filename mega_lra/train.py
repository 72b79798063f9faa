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
from omegaconf import DictConfig

from mega_lra.training.callbacks import NonFiniteLossError
from mega_lra.training.config import fill_run_info, register_resolvers
from mega_lra.training.run_dir import RunDirError
from tasks.errors import DataError

register_resolvers()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from mega_lra.training.runner import train  # heavy imports after Hydra parsed the CLI

    hydra_cfg = HydraConfig.get()
    fill_run_info(cfg, hydra_cfg.runtime.choices, hydra_cfg.runtime.output_dir)
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
