"""mega-lra's Lightning callbacks (the stock ones, ModelCheckpoint, LearningRateMonitor and
RichProgressBar, are configured in `conf/callbacks/`).

- `LastCheckpoint`: `last.ckpt` every `every_n_train_steps` optimiser steps (at the first batch
  end from there on that is neither followed by a validation nor the epoch's last), after the
  first step of every epoch and when fit ends, written through the atomic `CheckpointIO`, so a
  killed run resumes close to where it died, mid-epoch included, and replays exactly what the
  uninterrupted run would have done.
- `ValidateAtMaxSteps`: when `trainer.max_steps` ends fit in the middle of an epoch, Lightning
  would stop without validating; this asks for the stop one step early enough that the final
  weights are validated (and can become `best.ckpt`).
- `NonFiniteGuard`: stops on a NaN/inf loss (before its backward) or gradient norm (before the
  optimiser step), with one message naming the step and the last good checkpoint; that
  checkpoint is left as it was.
- `StuckAtChance`: warns once when validation accuracy has not risen clearly above the
  majority-class accuracy after `patience` validations (the most common complaint on Pathfinder
  and Path-X), with what usually helps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


class LastCheckpoint(Callback):
    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 500) -> None:
        if every_n_train_steps < 1:
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps}: expected "
                "an integer >= 1"
            )
        self.dirpath = Path(dirpath)
        self.every = int(every_n_train_steps)
        self._saved_step = -1
        self._due = False

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def _save(self, trainer: L.Trainer) -> None:
        self._due = False
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        self._saved_step = trainer.global_step
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state, for resume

    @staticmethod
    def _validation_follows(trainer: L.Trainer) -> bool:
        """Whether Lightning validates right after this training batch.

        A checkpoint taken just before such a validation would resume past it (Lightning fast-
        forwards over it), so the save waits for the next batch end instead."""
        if trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step:
            return True
        loop = trainer.fit_loop
        try:
            return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
        except AttributeError:  # a Lightning without this private helper: save now
            return False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        stepped = trainer.global_step != self._saved_step
        if stepped and trainer.global_step and trainer.global_step % self.every == 0:
            self._due = True
        accumulating = trainer.fit_loop._should_accumulate()
        if (
            self._due
            and not accumulating
            and not self._validation_follows(trainer)
            and not self._epoch_ends(trainer)
        ):
            self._save(trainer)

    @staticmethod
    def _epoch_ends(trainer: L.Trainer) -> bool:
        """Whether this was the epoch's last batch.

        Lightning resumes a checkpoint taken from here to the next epoch's start in the next
        epoch, but with the exhausted loader state (an epoch without batches) or, from the
        epoch-end hooks, with the epoch counted twice (the next epoch's order seeded as the one
        after it): either way not the uninterrupted run. The save waits for the next epoch's
        first batch end."""
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._due = True  # saved after the next epoch's first step (see `_epoch_ends`)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)


class ValidateAtMaxSteps(Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        max_steps = trainer.max_steps
        if max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps:
            trainer.should_stop = True  # Lightning then validates this last step


class NonFiniteGuard(Callback):
    def _fail(self, trainer: L.Trainer, what: str, value: float) -> None:
        last = None
        for cb in trainer.callbacks:
            if isinstance(cb, LastCheckpoint) and cb.path.exists():
                last = cb.path
        keep = (
            f"The last good checkpoint, {last}, is unchanged; resume from it with resume=true "
            "after changing the cause."
            if last
            else "No checkpoint was written yet."
        )
        raise NonFiniteLossError(
            f"non-finite {what} ({value}) at optimiser step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}). Training stopped before the update. {keep} Usual causes: "
            "a learning rate too high for this model (optim.lr), no warm-up (sched.warmup_steps), "
            "fp16 overflow (use trainer.precision=bf16-mixed or 32), or bad inputs."
        )

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._fail(trainer, "loss", float(loss.detach().float().mean()))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if "16-mixed" in str(trainer.precision) and "bf16" not in str(trainer.precision):
            return  # fp16's grad scaler skips steps with inf gradients by design
        norm = pl_module.gradient_norm(optimizer) if hasattr(pl_module, "gradient_norm") else None
        if norm is not None and not math.isfinite(float(norm)):
            self._fail(trainer, "gradient norm", float(norm))


class StuckAtChance(Callback):
    def __init__(self, patience: int = 5, margin: float = 0.02) -> None:
        self.patience = int(patience)
        self.margin = float(margin)
        self.validations = 0
        self.warned = False

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations, "warned": self.warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))
        self.warned = bool(state_dict.get("warned", False))

    @staticmethod
    def majority_fraction(trainer: L.Trainer) -> float | None:
        built = getattr(trainer.datamodule, "built", None)
        try:
            counts = built.manifest["splits"]["val"]["labels"]
        except (AttributeError, KeyError, TypeError):
            return None
        total = sum(counts.values())
        return max(counts.values()) / total if total else None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.warned or self.patience <= 0:
            return
        self.validations += 1
        best = getattr(pl_module, "best_val_accuracy", None)
        majority = self.majority_fraction(trainer)
        if best is None or majority is None or self.validations < self.patience:
            return
        if best <= majority + self.margin:
            self.warned = True
            rank_zero_warn(
                f"val/acc is stuck at chance: best {best:.4f} after {self.validations} "
                f"validations vs majority-class accuracy {majority:.4f} (+{self.margin}). "
                "On Pathfinder and Path-X this plateau is common early and can last long; what "
                "helps: the recipe's long warm-up (sched.warmup_steps), a lower optim.lr, "
                "pre-norm + batchnorm as in the paper, and checking the inputs are normalised "
                "(task.mean/std). On other tasks it usually means a bug in the data or the lr.",
                category=UserWarning,
            )
