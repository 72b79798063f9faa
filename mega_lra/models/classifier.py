"""The one LRA classifier: input encoder -> backbone -> final LayerNorm (if asked) -> pooling
(masked mean by default) -> head. Every model of the suite is this class with another backbone;
it is never subclassed per model.

As the original `LRAModel` builds it (`mega_paper_and_code.md` §1.5): tokens go through an
embedding, pixels and audio through the real-number encoder; positions are an encoder option
(Mega has none, the Transformer baseline adds sinusoids); the hidden states are mean-pooled over
the real tokens (true lengths, before any chunk padding); the head is Linear -> dropout -> GELU ->
bias-free Linear. For retrieval (`head="retrieval"`) both documents go through the same encoder
and backbone in one call and their pooled vectors are concatenated.

Two classifier options serve other suites' recipes (the S4 ones, `lra_baselines.md` §3.6):
`pooling: last` takes each row's last real token (true lengths) instead of the mean, and
`retrieval_features: nli` feeds the head [u, v, u * v, u - v] instead of [u, v].

The backbone contract (DESIGN.md): a `torch.nn.Module` with `__init__(hidden_size, **fields)` (and a
`max_length` parameter if it needs the task's length) and `forward(x, mask) -> y`, x (B, L, d)
float, mask (B, L) bool with True = real token, y (B, L, d). Optional: `describe() -> dict`
(what the model is, stored in results.json as `model_info`), `pad_multiple` (lengths padded to
a multiple of it) and `causal` (True when the output at t depends only on positions <= t; the
self-pretraining objective follows it).

Batches are the dicts of `tasks.collate`: `input_ids` (B, L) or (B, 2, L) for tokens, `inputs`
(B, L) float for pixels/audio, `attention_mask`, `lengths`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mega_lra.models.encoders import (
    LearnedPositions,
    RealNumberEncoder,
    SinusoidalPositions,
    TokenEncoder,
)
from mega_lra.models.heads import ClassifierHead, last_token_pool, masked_mean_pool, nli_features

INPUT_KINDS = ("tokens", "pixels", "audio")
HEADS = ("pooled", "retrieval")
POSITIONS = (None, "sinusoidal", "learned")
POOLINGS = ("mean", "last")
RETRIEVAL_FEATURES = ("concat", "nli")
# The task's facts: the runner passes them from the task, a model file never holds them.
TASK_FACTS = ("num_classes", "input_kind", "head", "vocab_size", "pad_id", "max_length")


def import_backbone(path: str | type) -> type:
    """The class named by an import path such as `mega_lra.models.mega.MegaBackbone`."""
    if isinstance(path, type):
        return path
    module_name, _, class_name = str(path).rpartition(".")
    if not module_name:
        raise ValueError(f"model.backbone={path!r}: expected an import path 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model.backbone={path!r}: cannot import {module_name!r} ({err})") from err
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f"model.backbone={path!r}: {module_name} has no nn.Module {class_name!r}")
    return cls


def build_backbone(cls: type, hidden_size: int, max_length: int | None, fields: Mapping) -> Any:
    """`cls(hidden_size, **fields)` (+ `max_length` when it declares it); a field the backbone
    does not take is one error naming it."""
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        accepted = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]
        for key in fields:
            if key not in accepted:
                raise ValueError(
                    f"model.{key}: not a field of {cls.__name__}; expected one of "
                    f"{sorted(set(accepted) - {'hidden_size', 'max_length'})}"
                )
    kwargs = dict(fields)
    if "max_length" in params:
        kwargs["max_length"] = max_length
    return cls(hidden_size, **kwargs)


class LRAClassifier(nn.Module):
    """encoder -> backbone -> pooling -> head; `forward(batch)` returns logits (B, classes).

    `backbone`: the backbone class or its import path; `label`: how tables name the model;
    `hidden_size`: d of the encoder, backbone and pooling. Classifier options: `embedding_std`
    (token embedding N(0, std); null: d^-1/2 as Mega), `scale_embedding` (tokens x sqrt(d)),
    `positions` (null | sinusoidal | learned: a table of the task's max_length),
    `final_layernorm` (a LayerNorm after the backbone, for
    backbones that do not end with their own norm; Mega's pre-norm stack has its own),
    `classifier_hidden_size` (null: 2d), `classifier_dropout` (null: the backbone's
    `dropout_prob`, else 0), `pooling` (mean: over the real tokens | last: the last real token),
    `retrieval_features` (concat: [u, v] | nli: [u, v, u * v, u - v]; retrieval head only).
    Every other keyword goes to the backbone."""

    def __init__(
        self,
        backbone: str | type,
        label: str = "",
        hidden_size: int = 128,
        *,
        num_classes: int,
        input_kind: str = "tokens",
        head: str = "pooled",
        vocab_size: int | None = None,
        pad_id: int = 0,
        max_length: int | None = None,
        embedding_std: float | None = None,
        scale_embedding: bool = False,
        positions: str | None = None,
        final_layernorm: bool = False,
        classifier_hidden_size: int | None = None,
        classifier_dropout: float | None = None,
        pooling: str = "mean",
        retrieval_features: str = "concat",
        **backbone_fields: Any,
    ) -> None:
        super().__init__()
        for key, value, allowed in (
            ("head", head, HEADS),
            ("input_kind", input_kind, INPUT_KINDS),
            ("positions", positions, POSITIONS),
            ("pooling", pooling, POOLINGS),
            ("retrieval_features", retrieval_features, RETRIEVAL_FEATURES),
        ):
            if value not in allowed:
                raise ValueError(f"model.{key}={value!r}: expected one of {list(allowed)}")
        cls = import_backbone(backbone)
        self.backbone_path = f"{cls.__module__}.{cls.__qualname__}"
        self.label = label or cls.__name__
        self.head_kind = head
        self.pooling = pooling
        self.retrieval_features = retrieval_features
        self.input_kind = input_kind
        self.num_classes = num_classes
        self.hidden_size = hidden_size

        if input_kind == "tokens":
            if not vocab_size:
                raise ValueError(
                    "model.vocab_size: token inputs need the task's vocabulary (task.vocab_size)"
                )
            scale = math.sqrt(hidden_size) if scale_embedding else 1.0
            self.encoder = TokenEncoder(vocab_size, hidden_size, pad_id, embedding_std, scale)
        else:
            self.encoder = RealNumberEncoder(hidden_size)
        self.positions: nn.Module | None = None
        if positions == "sinusoidal":
            self.positions = SinusoidalPositions(hidden_size)
        elif positions == "learned":
            if not max_length:
                raise ValueError("model.positions=learned needs the task's max_length")
            self.positions = LearnedPositions(max_length, hidden_size)
        self.backbone = build_backbone(cls, hidden_size, max_length, backbone_fields)
        self.final_norm = nn.LayerNorm(hidden_size) if final_layernorm else None
        self.pad_multiple = int(getattr(self.backbone, "pad_multiple", 0) or 0)

        if classifier_dropout is None:
            classifier_dropout = backbone_fields.get(
                "dropout_prob", getattr(self.backbone, "dropout_prob", 0.0)
            )
        pair = 4 if retrieval_features == "nli" else 2
        pooled = pair * hidden_size if head == "retrieval" else hidden_size
        self.classifier = ClassifierHead(
            pooled, classifier_hidden_size or 2 * hidden_size, num_classes, classifier_dropout
        )

    def describe(self) -> dict[str, Any]:
        """What the model is (JSON values): the backbone's `describe()`, its import path, label."""
        own = getattr(self.backbone, "describe", None)
        info = dict(own()) if callable(own) else {}
        return {"backbone": self.backbone_path, "label": self.label, **info}

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) inputs -> (B, L, d) embeddings (positions added when the model has them)."""
        h = self.encoder(x)
        return h if self.positions is None else self.positions(h, mask)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) inputs -> (B, d) pooled representations."""
        keep = mask.to(torch.bool)
        hidden = self.backbone(self.embed(x, keep), keep)  # (B, L, d)
        if self.final_norm is not None:
            hidden = self.final_norm(hidden) * keep.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "last":
            return last_token_pool(hidden, keep, lengths)
        return masked_mean_pool(hidden, keep, lengths)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = batch["input_ids"] if "input_ids" in batch else batch["inputs"]
        mask, lengths = batch["attention_mask"], batch["lengths"]
        if self.head_kind == "retrieval":
            b, _, length = x.shape  # (B, 2, L): both documents in one backbone call
            pooled = self.encode(
                x.reshape(2 * b, length), mask.reshape(2 * b, length), lengths.reshape(2 * b)
            )
            if self.retrieval_features == "nli":
                u, v = pooled.view(b, 2, -1).unbind(1)
                pooled = nli_features(u, v)  # (B, 4d)
            else:
                pooled = pooled.view(b, -1)  # (B, 2d) = [u, v]
        else:
            pooled = self.encode(x, mask, lengths)
        return self.classifier(pooled)


def count_parameters(model: nn.Module, exclude_token_embedding: bool = False) -> int:
    """Trainable parameters (shared tensors once); optionally without the token embedding
    (what the paper's §2.2 counts)."""
    skip: set[int] = set()
    if exclude_token_embedding:
        skip = {id(m.embed.weight) for m in model.modules() if isinstance(m, TokenEncoder)}
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen and id(p) not in skip:
            seen.add(id(p))
            total += p.numel()
    return total
