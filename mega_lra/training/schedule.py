"""Learning-rate schedules: the Mega recipes' (fairseq's `linear_decay`), and the S4 recipes'
cosine with linear warm-up (S4-v2) and ReduceLROnPlateau on validation accuracy (S4-v1).

`warmup_linear_decay` (`conf/sched/linear_warmup_decay.yaml`), the Mega recipes' schedule:

With peak lr = the optimiser's lr, warm-up from `init_lr` over `warmup_steps` updates with
exponent `warmup_power` (1 for every LRA task but Path-X, which uses 2), then linear decay to
`end_lr` at `total_steps`, constant after it:

    lr(s) = init + (peak - init) * (s / W)^p              s <= W
    lr(s) = end + (peak - end) * (T - s) / (T - W)         W < s <= T
    lr(s) = end                                            s > T

s counts optimiser updates from 0 (the first update uses `init_lr`, as fairseq's). Parameter
groups with their own lr are scaled by the same factor.

`cosine_warmup` (`conf/sched/cosine_warmup.yaml`), HF transformers'
`get_cosine_schedule_with_warmup` as the S4 suite's `cosine_warmup` scheduler uses it:

    factor(s) = s / W                                       s < W
    factor(s) = max(0, (1 + cos(pi * (s - W) / (T - W))) / 2)   s >= W

`rsqrt_warmup` (`conf/sched/rsqrt.yaml`) and `lra_cosine` (`conf/sched/lra_cosine.yaml`), the
LRA suite's flax schedules (`create_learning_rate_scheduler`, reference/transformer_baselines.md
§1), with base lr = the optimiser's lr (LRA's `learning_rate`, e.g. 0.05 for the text tasks):

    rsqrt:  factor(s) = min(1, s / W) / sqrt(max(s, W))
    cosine: factor(s) = min(1, s / W) * max(0, (1 + cos(pi * frac(max(0, s - W) / T))) / 2)

(LRA's "constant*linear_warmup*rsqrt_decay" and "constant*linear_warmup*cosine_decay")

with T = total steps (LRA's steps_per_cycle = num_train_steps).

`reduce_on_plateau` (`conf/sched/plateau.yaml`): torch's ReduceLROnPlateau on a logged metric
(`val/acc`, mode max), stepped once per epoch after validation; every group's lr times `factor`
after `patience` epochs without improvement (the S4-v1 recipes: factor 0.2, patience 5-40).
`LRAModule.configure_optimizers` hands it to Lightning with its `monitor`.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


class WarmupLinearDecay:
    """The schedule as a multiplicative factor of the peak lr (picklable, for `LambdaLR`)."""

    def __init__(
        self,
        peak_lr: float,
        warmup_steps: int,
        total_steps: int,
        init_lr: float = 1e-7,
        end_lr: float = 0.0,
        warmup_power: float = 1.0,
    ) -> None:
        if peak_lr <= 0:
            raise ValueError(f"optim.lr={peak_lr}: expected a positive learning rate")
        if warmup_steps < 0 or total_steps <= 0:
            raise ValueError(
                f"sched.warmup_steps={warmup_steps}, sched.total_steps={total_steps}: expected "
                "warmup_steps >= 0 and total_steps > 0"
            )
        self.peak = float(peak_lr)
        self.warmup = int(min(warmup_steps, total_steps))
        self.total = int(total_steps)
        self.init = float(init_lr)
        self.end = float(end_lr)
        self.power = float(warmup_power)

    def lr(self, step: int) -> float:
        if self.warmup and step <= self.warmup:
            return self.init + (self.peak - self.init) * (step / self.warmup) ** self.power
        if step >= self.total:
            return self.end
        return self.end + (self.peak - self.end) * (self.total - step) / (self.total - self.warmup)

    def __call__(self, step: int) -> float:
        return self.lr(step) / self.peak


def warmup_linear_decay(
    optimizer: Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    init_lr: float = 1e-7,
    end_lr: float = 0.0,
    warmup_power: float = 1.0,
) -> LambdaLR:
    """A `LambdaLR` stepping once per optimiser update (peak = the first group's lr)."""
    peak = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    factor = WarmupLinearDecay(peak, warmup_steps, total_steps, init_lr, end_lr, warmup_power)
    return LambdaLR(optimizer, factor)


class CosineWithWarmup:
    """Linear warm-up over `warmup_steps`, then a half cosine to 0 at `total_steps` (HF
    transformers' `get_cosine_schedule_with_warmup`), as a factor of each group's lr."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        if warmup_steps < 0 or total_steps <= 0:
            raise ValueError(
                f"sched.warmup_steps={warmup_steps}, sched.total_steps={total_steps}: expected "
                "warmup_steps >= 0 and total_steps > 0"
            )
        self.warmup = int(min(warmup_steps, total_steps))
        self.total = int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_warmup(optimizer: Optimizer, *, warmup_steps: int, total_steps: int) -> LambdaLR:
    """A `LambdaLR` stepping once per optimiser update."""
    return LambdaLR(optimizer, CosineWithWarmup(warmup_steps, total_steps))


class RsqrtWarmup:
    """LRA's "constant*linear_warmup*rsqrt_decay" as a factor of each group's lr."""

    def __init__(self, warmup_steps: int) -> None:
        if warmup_steps <= 0:
            raise ValueError(f"sched.warmup_steps={warmup_steps}: expected a positive integer")
        self.warmup = int(warmup_steps)

    def __call__(self, step: int) -> float:
        return min(1.0, step / self.warmup) / math.sqrt(max(step, self.warmup))


def rsqrt_warmup(
    optimizer: Optimizer, *, warmup_steps: int, total_steps: int | None = None
) -> LambdaLR:
    """A `LambdaLR` stepping once per optimiser update (`total_steps` is not used)."""
    return LambdaLR(optimizer, RsqrtWarmup(warmup_steps))


class LRACosine:
    """LRA's "constant*linear_warmup*cosine_decay" as a factor of each group's lr: the cosine
    runs over `total_steps` updates counted from the end of warm-up (so it has not reached 0 at
    total_steps unless warmup_steps = 0), as flax's scheduler computes it."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        if warmup_steps < 0 or total_steps <= 0:
            raise ValueError(
                f"sched.warmup_steps={warmup_steps}, sched.total_steps={total_steps}: expected "
                "warmup_steps >= 0 and total_steps > 0"
            )
        self.warmup = int(warmup_steps)
        self.total = int(total_steps)

    def __call__(self, step: int) -> float:
        warm = min(1.0, step / self.warmup) if self.warmup else 1.0
        progress = max(0.0, (step - self.warmup) / self.total) % 1.0
        return warm * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def lra_cosine(optimizer: Optimizer, *, warmup_steps: int, total_steps: int) -> LambdaLR:
    """A `LambdaLR` stepping once per optimiser update."""
    return LambdaLR(optimizer, LRACosine(warmup_steps, total_steps))


class ReduceOnPlateau(ReduceLROnPlateau):
    """torch's ReduceLROnPlateau that knows the logged metric it follows (`monitor`); Lightning
    steps it once per epoch with that metric's value."""

    def __init__(self, optimizer: Optimizer, *, monitor: str = "val/acc", **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self.monitor = monitor


def reduce_on_plateau(
    optimizer: Optimizer,
    *,
    monitor: str = "val/acc",
    mode: str = "max",
    factor: float = 0.2,
    patience: int = 5,
    min_lr: float = 0.0,
    total_steps: int | None = None,
) -> ReduceOnPlateau:
    """ReduceLROnPlateau on `monitor` (`total_steps`, given to every schedule, is not used)."""
    if mode not in ("max", "min"):
        raise ValueError(f"sched.mode={mode!r}: expected 'max' (accuracy) or 'min' (loss)")
    if not 0.0 < factor < 1.0 or patience < 0:
        raise ValueError(
            f"sched.factor={factor}, sched.patience={patience}: expected 0 < factor < 1 and "
            "patience >= 0"
        )
    return ReduceOnPlateau(
        optimizer, monitor=monitor, mode=mode, factor=factor, patience=patience, min_lr=min_lr
    )
