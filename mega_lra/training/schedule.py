"""Learning-rate schedule of the Mega recipes (fairseq's `linear_decay` schedule).

With peak lr = the optimiser's lr, warm-up from `init_lr` over `warmup_steps` updates with
exponent `warmup_power` (1 for every LRA task but Path-X, which uses 2), then linear decay to
`end_lr` at `total_steps`, constant after it:

    lr(s) = init + (peak - init) * (s / W)^p              s <= W
    lr(s) = end + (peak - end) * (T - s) / (T - W)         W < s <= T
    lr(s) = end                                            s > T

s counts optimiser updates from 0 (the first update uses `init_lr`, as fairseq's). Parameter
groups with their own lr are scaled by the same factor.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


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
