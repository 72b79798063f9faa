"""`LRAModule`: the one LightningModule of mega-lra (loss, metrics, optimiser, schedule).

classifier (plain `nn.Module`, `mega_lra.models`) -> logits -> cross-entropy (the original's
summed NLL / batch size = the batch mean). Logged: `train/loss` and `train/acc` per batch;
`val/loss`, `val/acc`, `val/acc_best`, `test/loss`, `test/acc` from torchmetrics objects (reduced
across processes); the learning rate as `train/lr`; the gradient norm before clipping as
`train/grad_norm`.

For exact resume the checkpoint also carries the best validation accuracy so far, the wall time
spent in fit, and the torch / numpy / random RNG states (Lightning saves none of these); the RNG
states are restored when training starts, after everything the restore itself draws. Under DDP
the states of every process are gathered into rank 0's checkpoint and each process restores its
own (`mega_lra.training.distributed`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mega_lra.training.distributed import all_rank_rng_states, rng_states_for_rank

EVAL_SPLITS = ("val", "test")


def rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states as plain, weights_only-safe objects."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(_as_tuples(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a checkpoint round trip may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


class LRAModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        num_classes: int,
        total_steps: int | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.total_steps = total_steps
        self.run_config = dict(run_config or {})
        self.metrics = nn.ModuleDict(
            {
                s: nn.ModuleDict(
                    {
                        "acc": MulticlassAccuracy(num_classes, average="micro"),
                        "loss": MeanMetric(),
                    }
                )
                for s in EVAL_SPLITS
            }
        )
        self.best_val_accuracy: float | None = None
        self.train_seconds_before = 0.0  # fit wall time of earlier (interrupted) sessions
        self._fit_started: float | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._grad_norm: tuple[int, torch.Tensor | None] | None = None  # (step, norm)

    # ----------------------------------------------------------------------------- steps
    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch)
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.detach().argmax(dim=-1) == labels).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/acc", acc, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        logits = self.model(batch)
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)
        self.metrics[split]["acc"].update(logits, labels)
        self.metrics[split]["loss"].update(loss, weight=labels.numel())

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_eval(self, split: str) -> float:
        acc = self.metrics[split]["acc"].compute()
        # compute() has reduced over processes: every rank logs the same value
        self.log(f"{split}/acc", acc, prog_bar=True, sync_dist=True)
        self.log(f"{split}/loss", self.metrics[split]["loss"].compute(), sync_dist=True)
        for metric in self.metrics[split].values():
            metric.reset()
        return float(acc)

    def on_validation_epoch_end(self) -> None:
        acc = self._log_eval("val")
        if self.trainer.sanity_checking:
            return
        if self.best_val_accuracy is None or acc > self.best_val_accuracy:
            self.best_val_accuracy = acc
        self.log("val/acc_best", self.best_val_accuracy, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # ------------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.model)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        if not self.total_steps:
            raise ValueError("LRAModule: total_steps must be known to build the lr schedule")
        scheduler = self.scheduler_factory(optimizer, total_steps=self.total_steps)
        monitor = getattr(scheduler, "monitor", None)
        if monitor:  # ReduceLROnPlateau: once per epoch, after validation, on the logged metric
            # (not strict: an epoch without validation, e.g. a benchmark's, warns and skips it)
            config = {"interval": "epoch", "frequency": 1, "monitor": monitor, "strict": False}
        else:
            config = {"interval": "step"}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, **config, "name": "train/lr"},
        }

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norm = self.gradient_norm(optimizer)
        if norm is not None:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def gradient_norm(self, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
        """Total 2-norm of the gradients before clipping, computed once per update (the
        non-finite guard and the logging share it); None when no parameter has a gradient."""
        step = self.trainer.global_step
        if self._grad_norm is not None and self._grad_norm[0] == step:
            return self._grad_norm[1]
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None
        self._grad_norm = (step, norm)
        return norm

    # -------------------------------------------------------------------- checkpoint state
    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None

    def on_train_end(self) -> None:
        self.train_seconds_before = self.train_seconds
        self._fit_started = None

    @property
    def train_seconds(self) -> float:
        """Wall time spent in fit, across resumed sessions."""
        running = 0.0 if self._fit_started is None else time.perf_counter() - self._fit_started
        return self.train_seconds_before + running

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = rng_states()
        checkpoint["mega_lra"] = {
            "config": self.run_config,
            "best_val_accuracy": self.best_val_accuracy,
            "train_seconds": self.train_seconds,
            "rng_states": states,
            "rng_states_by_rank": all_rank_rng_states(states),  # None on one process
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("mega_lra") or {}
        self.best_val_accuracy = state.get("best_val_accuracy")
        self.train_seconds_before = float(state.get("train_seconds", 0.0))
        world = self.trainer.world_size if self._trainer is not None else 1
        self._pending_rng = rng_states_for_rank(state, self.global_rank, world)
