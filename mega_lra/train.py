"""``python -m mega_lra.train [experiment=NAME] [task=NAME] [model=NAME] [key=value ...]``

Composes `conf/train.yaml` with Hydra, then `mega_lra.training.runner.train` fits, validates and
tests one run into the run dir (`hydra.run.dir`) and writes its `results.json`. `-m` sweeps
(Hydra multirun) give one run dir per job under the sweep dir. Bad data, a run dir that must not
be overwritten, or a non-finite loss end with one message and exit status 2 (1 for the loss); in
a multirun the message is printed and the job fails without stopping the other jobs (Hydra
reports the first failure when the sweep ends). Jobs started by submitit run with `resume=true`
semantics (a requeued job continues itself); see `mega_lra.training.launch`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mega_lra.training.callbacks import NonFiniteLossError
from mega_lra.training.config import fill_run_info, register_resolvers
from mega_lra.training.console import quiet_known_noise
from mega_lra.training.launch import (
    check_launcher_supports,
    is_multirun,
    launched_job,
    resume_if_requeueable,
)
from mega_lra.training.run_dir import RunDirError, finished_record
from tasks.errors import DataError

register_resolvers()
quiet_known_noise()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from mega_lra.training.runner import train  # heavy imports after Hydra parsed the CLI

    hydra_cfg = HydraConfig.get()
    fill_run_info(cfg, hydra_cfg.runtime.choices, hydra_cfg.runtime.output_dir)
    try:
        resume_if_requeueable(cfg)
        check_launcher_supports(cfg)
        with launched_job():
            results = train(cfg)
    except (DataError, RunDirError, ValueError, NonFiniteLossError) as err:
        where = f" (job {cfg.run_dir})" if is_multirun() else ""
        print(f"error{where}: {err}", file=sys.stderr)
        if is_multirun():
            raise  # this job fails; the sweep's other jobs still run
        sys.exit(1 if isinstance(err, NonFiniteLossError) else 2)
    # what sweepers maximise: validation accuracy; a pretraining run's masked accuracy, or its
    # masked MAE negated
    if "best_val_metric" in results:
        value = results["best_val_metric"]
        mode = (results.get("objective") or {}).get("loss")
        return None if value is None else (-value if mode == "l1" else value)
    return results.get("best_val_accuracy")


def finished_run_dir(argv: list[str]) -> Path | None:
    """The run dir of `resume=true hydra.run.dir=DIR` when it already holds results.

    Checked before Hydra starts, because Hydra rewrites its bookkeeping (`.hydra/`, the job log)
    in the run dir as soon as it launches a job; a finished run must stay untouched."""
    if "-m" in argv or "--multirun" in argv:
        return None
    values = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    resume = values.get("resume", values.get("+resume", "false")).lower() in ("true", "1", "yes")
    run_dir = values.get("hydra.run.dir")
    if resume and run_dir and finished_record(Path(run_dir)) is not None:
        return Path(run_dir)
    return None


if __name__ == "__main__":
    done = finished_run_dir(sys.argv[1:])
    if done is not None:
        print(f"[mega-lra] {done} is finished ({finished_record(done).name} exists); nothing to do")
        sys.exit(0)
    main()
