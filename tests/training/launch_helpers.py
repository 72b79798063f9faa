"""Callbacks the launcher tests add to real CLI runs (`+callbacks.<name>={_target_: ...}`):
interrupt a run once at a given step, and record what each process evaluated."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class Interrupted(RuntimeError):
    """Raised by `InterruptOnce(how="raise")` (an in-process run that stops)."""


class InterruptOnce(Callback):
    """Before the batch that starts at optimiser step `step`, once (while `flag` does not exist):
    every process exits at once (`how="exit"`, like a kill), raises `Interrupted` (`"raise"`) or
    sends itself a signal (`"SIGUSR2"`: what SLURM sends before a preemption or time limit).
    Changes no number before that."""

    def __init__(self, step: int, flag: str, how: str = "exit") -> None:
        self.step = int(step)
        self.flag = Path(flag)
        self.how = how
        self.armed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.armed = not self.flag.exists()  # decided on every process before anyone writes it

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.armed or trainer.global_step < self.step:
            return
        self.armed = False
        if trainer.is_global_zero:
            self.flag.write_text(str(trainer.global_step))
        if self.how == "exit":
            os._exit(3)
        if self.how == "raise":
            raise Interrupted(f"interrupted before step {trainer.global_step}")
        os.kill(os.getpid(), getattr(signal, self.how))


class EvalProbe(Callback):
    """Writes `<out>/<split>-rank<r>.json`: the dataset rows this process's evaluation loader
    yields and how many labels it scored (the last validation, the test)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.scored = 0

    def _start(self) -> None:
        self.scored = 0

    def _count(self, batch: Any) -> None:
        self.scored += len(batch["labels"])

    def _write(self, trainer: L.Trainer, split: str, loaders: Any) -> None:
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        record = {
            "rank": trainer.global_rank,
            "world": trainer.world_size,
            "sampler": type(loader.sampler).__name__,
            "rows": [int(i) for i in loader.sampler],
            "scored": self.scored,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"{split}-rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_validation_epoch_start(self, *args: Any) -> None:
        self._start()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, *args: Any) -> None:
        self._count(batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "val", trainer.val_dataloaders)

    def on_test_epoch_start(self, *args: Any) -> None:
        self._start()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args: Any) -> None:
        self._count(batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test", trainer.test_dataloaders)


class RankDependentDraws(Callback):
    """Draws `rank + 1` random numbers before every training batch, so each process's RNG
    stream differs (as CUDA dropout's does when the processes' batch shapes differ; on CPU,
    dropout takes one draw per call whatever the shape)."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        torch.rand(trainer.global_rank + 1)
