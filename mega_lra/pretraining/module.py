"""`PretrainModule`: the LightningModule of the pretraining stage. It is `LRAModule` (the same
optimiser, schedule, gradient-norm logging, exact-resume state) with another step: corrupt the
batch (`masking`), predict every position (`PretrainModel`), score the chosen positions only.

Loss: cross-entropy (tokens, grey levels) or L1 (values) averaged over the batch's scored
positions; a position that is not scored is never selected, so it contributes exactly nothing
(a batch without one gives 0). Metrics per split (`val`, `test`, summed over the split's scored
positions, reduced across processes): `<split>/masked_acc` or `<split>/masked_mae`
(`next_acc` / `next_mae` for the causal objective) and `<split>/loss`; `val/<metric>_best`.
Training logs `train/loss` and `train/<metric>` per step. The best validation value is kept where
`LRAModule` keeps its best accuracy (`best_val_accuracy`, saved for resume): the maximum of an
accuracy, the minimum of an MAE.

Checkpoints also carry `spt`: the objective and the facts fine-tuning checks (backbone,
`describe()`, direction, vocabulary, input kind, width, data manifest, train fraction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

from mega_lra.pretraining.masking import (
    IGNORE,
    SPLIT_SALT,
    choose_positions,
    choose_spans,
    grey_levels,
    mask_tokens,
    next_targets,
)
from mega_lra.pretraining.objectives import Objective
from mega_lra.training.module import EVAL_SPLITS, LRAModule


def split_pairs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Retrieval batch (B, 2, L) -> 2B independent documents (rows 2r, 2r + 1)."""
    out = dict(batch)
    ids = batch.get("input_ids")
    if ids is None or ids.dim() != 3:
        return out
    b, _, length = ids.shape
    out["input_ids"] = ids.reshape(2 * b, length)
    out["attention_mask"] = batch["attention_mask"].reshape(2 * b, length)
    out["lengths"] = batch["lengths"].reshape(2 * b)
    rows = batch["row_index"].to(torch.int64)
    out["row_index"] = torch.stack([2 * rows, 2 * rows + 1], dim=1).reshape(2 * b)
    return out


def corrupt(
    batch: Mapping[str, torch.Tensor],
    objective: Objective,
    key: tuple[int, ...],
    normalization: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The pretraining batch: corrupted inputs, `spt_target` (B, L) and `spt_scored` (B, L)
    bool, from a collated batch with `row_index`."""
    out = split_pairs(batch)
    real = out["attention_mask"].to(torch.bool)
    rows = out["row_index"]
    masked = objective.kind == "masked"
    chosen = None
    if masked and objective.span is not None:
        chosen = choose_spans(real, objective.rate, objective.span, key, rows)
    elif masked:
        chosen = choose_positions(real, objective.rate, key, rows)
    if objective.target == "tokens":
        ids = out["input_ids"]
        if masked:
            out["input_ids"], target = mask_tokens(ids, chosen, objective.mask_id)
            scored = chosen
        else:
            target, scored = next_targets(ids, real, IGNORE)
    else:
        x = out["inputs"]
        if objective.target == "grey":
            values, fill = grey_levels(x, normalization or {}), IGNORE
        else:
            values, fill = x, 0.0
        if masked:
            out["inputs"] = x.masked_fill(chosen, 0.0)  # x (1 - m)
            out["spt_flag"] = chosen
            target, scored = values.masked_fill(~chosen, fill), chosen
        else:
            target, scored = next_targets(values, real, fill)
    out["spt_target"], out["spt_scored"] = target, scored
    return out


def score(
    out: torch.Tensor, target: torch.Tensor, scored: torch.Tensor, objective: Objective
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, summed loss, hits or summed |error|, count) over the scored positions of
    (B, L, outputs) predictions."""
    count = scored.sum()
    if objective.loss == "ce":
        logits = out[scored].float()  # (N, outputs)
        wanted = target[scored]
        total = F.cross_entropy(logits, wanted, reduction="sum")
        measure = (logits.detach().argmax(dim=-1) == wanted).sum()
    else:
        err = (out[..., 0][scored].float() - target[scored].float()).abs()  # (N,)
        total = err.sum()
        measure = err.detach().sum()
    return total / count.clamp_min(1), total.detach(), measure, count


class PretrainModule(LRAModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        objective: Objective,
        seed: int,
        eval_mask_seed: int = 0,
        normalization: Mapping[str, Any] | None = None,
        total_steps: int | None = None,
        run_config: Mapping[str, Any] | None = None,
        spt_info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model,
            optimizer,
            scheduler,
            num_classes=2,
            total_steps=total_steps,
            run_config=run_config,
        )
        self.objective = objective
        self.seed = int(seed)
        self.eval_mask_seed = int(eval_mask_seed)
        self.normalization = dict(normalization or {})
        self.spt_info = dict(spt_info or {})
        self.metrics = nn.ModuleDict(
            {
                s: nn.ModuleDict({k: SumMetric() for k in ("measure", "count", "loss")})
                for s in EVAL_SPLITS
            }
        )

    def key(self, split: str) -> tuple[int, ...]:
        """The mask key: (seed, epoch) in training (fresh every epoch); (eval seed, split)."""
        if split == "train":
            return (self.seed, 1 + int(self.current_epoch))
        return (self.eval_mask_seed, SPLIT_SALT[split])

    def _step(self, batch: Mapping[str, torch.Tensor], split: str):
        spt = corrupt(batch, self.objective, self.key(split), self.normalization)
        out = self.model(spt)  # (B, L, outputs)
        return score(out, spt["spt_target"], spt["spt_scored"], self.objective)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, measure, count = self._step(batch, "train")
        value = measure.float() / count.clamp_min(1)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log(f"train/{self.objective.metric}", value, on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        _, total, measure, count = self._step(batch, split)
        metrics = self.metrics[split]
        metrics["measure"].update(measure.float())
        metrics["count"].update(count.float())
        metrics["loss"].update(total)

    def _log_eval(self, split: str) -> float:
        metrics = self.metrics[split]
        count = metrics["count"].compute().clamp_min(1)
        value = metrics["measure"].compute() / count
        self.log(f"{split}/{self.objective.metric}", value, prog_bar=True, sync_dist=True)
        self.log(f"{split}/loss", metrics["loss"].compute() / count, sync_dist=True)
        for metric in metrics.values():
            metric.reset()
        return float(value)

    def on_validation_epoch_end(self) -> None:
        value = self._log_eval("val")
        if self.trainer.sanity_checking:
            return
        best = self.best_val_accuracy
        if best is None or (value < best if self.objective.mode == "min" else value > best):
            self.best_val_accuracy = value
        self.log(f"val/{self.objective.metric}_best", self.best_val_accuracy, prog_bar=True)

    @property
    def best_val_metric(self) -> float | None:
        """The best validation value of the monitored metric (max accuracy, min MAE)."""
        return self.best_val_accuracy

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["spt"] = {
            **self.spt_info,
            "objective": self.objective.to_dict(),
            "best_val_metric": self.best_val_accuracy,
        }
