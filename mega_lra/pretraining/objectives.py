"""Which self-pretraining objective a run uses, decided and checked before anything trains.

The rule (Amos et al. §2): **masked** prediction for bidirectional backbones, **next-token**
(causal) prediction for causal ones; `spt.objective: auto` picks it from the backbone, and an
explicit choice that contradicts the backbone is refused (a bidirectional model given causal
targets sees each target in its input; a causal model cannot see what follows a mask).

How a backbone says it is causal (the model contract's optional fields): a boolean attribute
`causal` (Mega: decoder mode with a one-sided EMA; S4: one-sided kernels, as S4-v1 always is),
else a boolean `causal` key of `describe()`. Anything else is bidirectional.

The task's defaults (its class's `SPT_MASK_RATE`, `SPT_PIXEL_LOSS`): ListOps 0.10, Text and
Retrieval 0.15, Image / Pathfinder / Path-X 0.50, SC-Raw 0.25; pixel loss L1 on the normalised
value for Image (and audio), cross-entropy over the 256 grey levels for Pathfinder and Path-X.

`spt.span_length` (null, or an integer >= 1; masked objective only) masks int(L p / s)
non-overlapping spans of s positions per row instead of Bernoulli(p) positions
(`masking.choose_spans`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

OBJECTIVES = ("auto", "masked", "causal")
PIXEL_LOSSES = ("l1", "ce")
GREY_LEVELS = 256


def is_causal(backbone: nn.Module) -> bool:
    """Whether a backbone's output at t depends only on inputs at positions <= t."""
    flag = getattr(backbone, "causal", None)
    if isinstance(flag, bool):
        return flag
    describe = getattr(backbone, "describe", None)
    info = describe() if callable(describe) else {}
    return info.get("causal") is True  # a backbone that says nothing is bidirectional


@dataclass(frozen=True)
class Objective:
    """A resolved objective: `kind` masked | causal; `rate` (masked only); `target` tokens |
    grey (256 grey levels) | value (the normalised value); `outputs` = the head's width;
    `mask_id` the id of masked tokens (token tasks, masked only); `span` the span length of
    span masking (None: each position on its own)."""

    kind: str
    rate: float | None
    target: str
    outputs: int
    mask_id: int | None = None
    span: int | None = None

    @property
    def loss(self) -> str:
        return "l1" if self.target == "value" else "ce"

    @property
    def metric(self) -> str:
        """The per-split metric's name: masked_acc / masked_mae (next_acc / next_mae causal)."""
        prefix = "masked" if self.kind == "masked" else "next"
        return f"{prefix}_{'mae' if self.loss == 'l1' else 'acc'}"

    @property
    def mode(self) -> str:
        return "min" if self.loss == "l1" else "max"

    @property
    def monitor(self) -> str:
        return f"val/{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "loss": self.loss, "metric": self.metric}
        if out["span"] is None:
            del out["span"]  # records without span masking read as before it existed
        return out


def task_defaults(task: Any) -> tuple[float | None, str]:
    """(masking rate, pixel loss) the task's class declares."""
    return getattr(task, "SPT_MASK_RATE", None), getattr(task, "SPT_PIXEL_LOSS", "l1")


def resolve_objective(spt: Mapping[str, Any], task: Any, backbone: nn.Module) -> Objective:
    """The objective of `spt` (the config's `spt` node) for a task and backbone; ValueError
    naming the key for a mismatch or a bad value."""
    kind = spt.get("objective") or "auto"
    if kind not in OBJECTIVES:
        raise ValueError(f"spt.objective={kind!r}: expected one of {list(OBJECTIVES)}")
    causal = is_causal(backbone)
    name = type(backbone).__name__
    if kind == "auto":
        kind = "causal" if causal else "masked"
    elif kind == "causal" and not causal:
        raise ValueError(
            f"spt.objective=causal with a bidirectional backbone ({name}): it would see each "
            "next-token target in its input. Use spt.objective=masked (or auto), or a causal "
            "model (Mega: +model.is_decoder=true model.bidirectional=false; S4-v1)"
        )
    elif kind == "masked" and causal:
        raise ValueError(
            f"spt.objective=masked with a causal backbone ({name}): it cannot see the context "
            "after a masked position. Use spt.objective=causal (or auto)"
        )
    default_rate, default_loss = task_defaults(task)
    rate = spt.get("mask_rate")
    if kind == "masked":
        if rate is None:
            rate = default_rate
        if rate is None:
            raise ValueError(
                f"spt.mask_rate: task {task.name!r} has no default masking rate; set one in (0, 1)"
            )
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate < 1:
            raise ValueError(
                f"spt.mask_rate={rate!r}: expected a number in (0, 1) for the masked objective "
                "(0 would train nothing: pretraining is not silently turned into classification)"
            )
        rate = float(rate)
    elif rate is not None:
        raise ValueError(
            f"spt.mask_rate={rate!r} with the causal objective, which masks nothing; leave it null"
        )
    span = spt.get("span_length")
    if span is not None:
        if kind != "masked":
            raise ValueError(
                f"spt.span_length={span!r} with the causal objective, which masks nothing; "
                "leave it null"
            )
        if not isinstance(span, int) or isinstance(span, bool) or span < 1:
            raise ValueError(
                f"spt.span_length={span!r}: expected null (each position masked on its own) or "
                "an integer >= 1 (int(L p / span) non-overlapping spans of that length per row)"
            )
    if task.input_kind == "tokens":
        if not task.vocab_size:
            raise ValueError(f"task {task.name!r}: token inputs need task.vocab_size")
        mask_id = int(task.vocab_size) if kind == "masked" else None
        return Objective(kind, rate, "tokens", int(task.vocab_size), mask_id, span)
    loss = spt.get("pixel_loss") or default_loss
    if loss not in PIXEL_LOSSES:
        raise ValueError(f"spt.pixel_loss={loss!r}: expected one of {list(PIXEL_LOSSES)}")
    if loss == "ce" and task.input_kind != "pixels":
        raise ValueError(
            f"spt.pixel_loss=ce: 256 grey levels exist only for pixel tasks, not "
            f"{task.input_kind}; use l1"
        )
    if loss == "ce":
        return Objective(kind, rate, "grey", GREY_LEVELS, span=span)
    return Objective(kind, rate, "value", 1, span=span)
