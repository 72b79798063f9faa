"""Shared by the pretraining tests."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class Killed(RuntimeError):
    """What `CrashAt` raises."""


class CrashAt(Callback):
    """Stops a run with an exception once `step` optimiser steps are done (a killed run)."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise Killed(f"killed at step {trainer.global_step}")
