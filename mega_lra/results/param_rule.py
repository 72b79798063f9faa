"""LRA's parameter rule: an "apples-to-apples" entry has within 10% of the base Transformer's
parameters on the task (LRA README; it says "at most 10% larger", the suite flags both ways,
±10%, since a much smaller model is no like-for-like comparison either). The table flags a cell
whose runs break it.

What is compared, per (model, task): the runs' own count (`results.json` `params`: the trainable
parameters of the classifier that was trained, token embedding included, shared tensors once)
against the base Transformer's recipe, `experiment=lra/xfm/<task>` (LRA's configuration, whatever
was run), counted the same way (`mega_lra.models.classifier.count_parameters`) on a model built
on the meta device (no memory; plain CPU when a model cannot be built there).
"""

from __future__ import annotations

from functools import cache

BASE_MODEL = "xfm"  # LRA's own Transformer: the base of the rule
TOLERANCE = 0.10


def within_rule(params: int, base: int, tolerance: float = TOLERANCE) -> bool:
    """Whether `params` is within ±`tolerance` of `base` (inclusive)."""
    return abs(params - base) <= tolerance * base


@cache
def recipe_params(model: str, task: str) -> int | None:
    """Trainable parameters of `experiment=lra/<model>/<task>`'s classifier; None when there is
    no such recipe."""
    import torch
    from hydra.utils import instantiate

    from mega_lra.models import build_classifier, catalog
    from mega_lra.models.classifier import count_parameters
    from mega_lra.training.config import compose

    experiment = f"lra/{model}/{task}"
    if experiment not in catalog.experiment_names("lra/"):
        return None
    cfg = compose([f"experiment={experiment}"])
    facts = instantiate(cfg.task)
    try:
        with torch.device("meta"):
            return count_parameters(build_classifier(cfg.model, facts))
    except Exception:  # noqa: BLE001 - an init that needs real tensors: build it on CPU
        return count_parameters(build_classifier(cfg.model, facts))


def base_params(task: str) -> int | None:
    """The base Transformer's parameters on `task` (its recipe), None without a recipe."""
    return recipe_params(BASE_MODEL, task)
