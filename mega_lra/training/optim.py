r"""Optimiser parameter groups.

The paper's recipes decay every parameter (fairseq's Adam with decoupled weight decay on all of
them, EMA and norm parameters included): that is what an empty rule list gives. Rules make
other choices configurable without code, e.g. no decay on norms and biases, or a separate lr for
the EMA parameters:

    optim:
      param_groups:
        - {name: no_decay, match: [norm, bias], weight_decay: 0.0}
        - {name: ema, match: [mega_layer.ema_gate], lr: 1e-3}

A parameter joins the FIRST rule one of whose `match` strings is a substring of its name (or of
its module's class name, so `norm` catches `SequenceNorm`/`LayerNorm` weights), or one of whose
`regex` patterns `re.search`es its full name (exact choices by name, e.g. the S4 recipes' SSM
parameters: `regex: ['\.kernel\.(log_dt|A_real|A_imag|B|P)$']`); the rest form the default
group. Every parameter lands in exactly one group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

ALLOWED_RULE_KEYS = {"name", "match", "regex", "lr", "weight_decay", "betas", "eps"}


def _owner_classes(model: nn.Module) -> dict[str, str]:
    """Parameter name -> class name of the module that owns it."""
    owners = {}
    for module_name, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            owners[full] = type(module).__name__
    return owners


def _as_list(patterns: str | Iterable[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def build_param_groups(
    model: nn.Module, rules: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Groups for a torch optimiser: ``[{"params": [...], "name": ..., **overrides}, ...]``."""
    rules = list(rules or [])
    regexes: list[list[re.Pattern]] = []
    for i, rule in enumerate(rules):
        unknown = set(rule) - ALLOWED_RULE_KEYS
        if unknown or not ({"match", "regex"} & set(rule)):
            raise ValueError(
                f"optim.param_groups[{i}]={dict(rule)}: expected keys 'match' (list of name "
                "substrings) or 'regex' (list of patterns searched in the full name), and any of "
                f"{sorted(ALLOWED_RULE_KEYS - {'match', 'regex'})}"
                + (f"; unknown {sorted(unknown)}" if unknown else "")
            )
        patterns = rule.get("regex") or []
        try:
            regexes.append([re.compile(p) for p in _as_list(patterns)])
        except re.error as err:
            raise ValueError(f"optim.param_groups[{i}].regex={patterns}: {err}") from err
    owners = _owner_classes(model)
    buckets: list[list[nn.Parameter]] = [[] for _ in rules]
    default: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        owner = owners.get(name, "")
        for i, rule in enumerate(rules):
            patterns = _as_list(rule.get("match") or [])
            if any(p in name or p.lower() in owner.lower() for p in patterns) or any(
                r.search(name) for r in regexes[i]
            ):
                buckets[i].append(param)
                break
        else:
            default.append(param)
    groups = [{"params": default, "name": "default"}] if default else []
    for i, (rule, params) in enumerate(zip(rules, buckets, strict=True)):
        if params:
            extra = {k: v for k, v in rule.items() if k not in ("match", "regex", "name")}
            if "betas" in extra:
                extra["betas"] = tuple(extra["betas"])
            groups.append({"params": params, "name": rule.get("name", f"group{i}"), **extra})
    return groups


def adamw(
    model: nn.Module,
    *,
    lr: float,
    betas: Sequence[float] = (0.9, 0.98),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, as fairseq's Adam in the Mega recipes) over the groups of
    `build_param_groups`. `conf/optim/adamw.yaml` builds it as a partial: `optim.lr` etc."""
    groups = build_param_groups(model, param_groups)
    return torch.optim.AdamW(
        groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused
    )
