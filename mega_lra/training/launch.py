"""How one training job meets whatever launched it: Hydra multiruns, submitit (SLURM or local)
and Lightning's DDP relaunch. Used by the entry point (`mega_lra.train`) around `train(cfg)`.

- **Requeue = resume.** A job that submitit requeues (preemption, or a timeout while
  `hydra.launcher.max_num_timeout` allows) is the same Hydra job started again with the same
  overrides and run dir. So every job under submitit runs with `resume=true` semantics: an
  empty run dir starts fresh, one with `checkpoints/last.ckpt` continues from it, a finished one
  is left as it is.
- **DDP inside a multirun.** Lightning starts the extra local processes of DDP by running this
  script again (`sys.argv` + `hydra.run.dir=<hydra.run.dir>`). In a multirun that would start
  the whole sweep again in every process, in a run dir of its own. `ddp_relaunch_as_this_job`
  makes the relaunch run only this job (its own overrides, `hydra.mode=RUN`) in its run dir.
  After the job, the variables Lightning's launcher set (`LOCAL_RANK`, `MASTER_PORT`, ...) and
  the process group are cleared, so the next job of the sweep launches its own processes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from mega_lra.training.run_dir import world_size

# what Lightning's subprocess launcher sets in the environment of the launching process
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def submitit_executor() -> str | None:
    """'slurm' or 'local' inside a job started by submitit, else None."""
    return os.environ.get("SUBMITIT_EXECUTOR") or None


def resume_if_requeueable(cfg: DictConfig) -> bool:
    """Under submitit, turn `resume` on (a requeued job must continue itself); True if it did."""
    if submitit_executor() is None or cfg.get("resume"):
        return False
    with open_dict(cfg):
        cfg.resume = True
    print(
        f"[mega-lra] launched by submitit ({submitit_executor()}): resume=true, so a requeued "
        f"job continues from {cfg.run_dir}/checkpoints/last.ckpt"
    )
    return True


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_launcher_supports(cfg: DictConfig) -> None:
    """Refuse DDP processes that the submitit local executor cannot start correctly."""
    if submitit_executor() == "local" and world_size(cfg.trainer) > 1:
        raise ValueError(
            f"trainer.devices x trainer.num_nodes = {world_size(cfg.trainer)} under "
            "hydra/launcher=submitit_local: that executor runs each job as one process and "
            "Lightning cannot relaunch it for DDP. Use the default launcher (drop "
            "hydra/launcher) or hydra/launcher=slurm, or trainer.devices=1"
        )


def ddp_relaunch_as_this_job() -> None:
    """In a multirun job, point Lightning's DDP relaunch at this job and its run dir."""
    if not is_multirun():
        return  # a single run: Lightning's own relaunch (argv + hydra.run.dir) is right
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


@contextlib.contextmanager
def launched_job() -> Iterator[None]:
    """Around one job: DDP relaunch pinned to it; launcher variables, `sys.argv` and the process
    group restored afterwards (the next job of an in-process multirun starts clean)."""
    argv = list(sys.argv)
    saved = {k: os.environ.get(k) for k in LAUNCHER_ENV}
    ddp_relaunch_as_this_job()
    try:
        yield
    finally:
        sys.argv = argv
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if is_multirun():
            _destroy_process_group()


def _destroy_process_group() -> None:
    import torch.distributed as dist  # (torch only once a job ran: the CLI starts fast)

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
