"""Model outputs with Hugging Face's attribute names. Each is a dataclass that also indexes like
HF's `ModelOutput`: `out["logits"]`, `out[0]` (the first non-None field) and `out.to_tuple()`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


class ModelOutput:
    """Dict-like access as in transformers' `ModelOutput`: keys are the fields that are not None
    (in field order), then any key set with `out[key] = value` (pipelines add some)."""

    def __post_init__(self) -> None:
        # `Output({"logits": ...})` builds from a dict, as HF's (pipelines re-batch this way)
        first, *rest = fields(self)
        value = getattr(self, first.name)
        if isinstance(value, dict) and all(getattr(self, f.name) is None for f in rest):
            setattr(self, first.name, None)
            for key, item in value.items():
                self[key] = item

    def keys(self) -> list[str]:
        names = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        return names + [k for k in self.__dict__.get("_added", ()) if k not in names]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.keys())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ModelOutput keys are strings, got {key!r}")
        if key not in {f.name for f in fields(self)}:
            self.__dict__.setdefault("_added", []).append(key)
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self):  # like HF's ModelOutput (an ordered dict): iterate over set keys
        return iter(self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]


@dataclass
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    past_key_values: list | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: list | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MultipleChoiceModelOutput(SequenceClassifierOutput):
    pass


@dataclass
class TokenClassifierOutput(SequenceClassifierOutput):
    pass


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
