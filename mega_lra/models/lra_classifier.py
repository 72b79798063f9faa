"""The LRA classifier: input encoder -> backbone -> masked mean pooling -> classifier head.

As the original `LRAModel` builds it (`mega_paper_and_code.md` §1.5): tokens go through an
embedding, pixels and audio through the real-number encoder; there are no positional embeddings
for Mega (position comes from the EMA and the relative bias); the hidden states are mean-pooled
over the real tokens; the head is Linear -> dropout -> GELU -> bias-free Linear. For retrieval
(`head="retrieval"`) both documents go through the same encoder and backbone and their pooled
vectors are concatenated.

`MegaClassifier(**fields)` takes every `MegaConfig` field by name (so a Hydra node
`model.chunk_size=64` reaches the config) plus the task-dependent fields below; the
`TransformerClassifier` takes `TransformerConfig`'s. Batches are the dicts of `tasks.collate`:
`input_ids` (B, L) or (B, 2, L) for tokens, `inputs` (B, L) float for pixels/audio,
`attention_mask`, `lengths`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mega_lra.configuration import MegaConfig
from mega_lra.models.backbones import MegaBackbone, TransformerBackbone
from mega_lra.models.encoders import RealNumberEncoder, TokenEncoder
from mega_lra.models.heads import ClassifierHead, masked_mean_pool
from mega_lra.transformer import TransformerConfig

INPUT_KINDS = ("tokens", "pixels", "audio")
HEADS = ("pooled", "retrieval")


class LRAClassifier(nn.Module):
    """encoder -> backbone -> pooling -> head; `forward(batch)` returns logits (B, classes)."""

    def __init__(
        self,
        encoder: nn.Module,
        backbone: nn.Module,
        hidden_size: int,
        num_classes: int,
        *,
        head: str = "pooled",
        input_kind: str = "tokens",
        classifier_hidden_size: int | None = None,
        classifier_dropout: float = 0.0,
        name: str = "",
        pad_multiple: int = 0,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"model.head={head!r}: expected one of {list(HEADS)}")
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"model.input_kind={input_kind!r}: expected one of {INPUT_KINDS}")
        self.name = name
        self.head_kind = head
        self.input_kind = input_kind
        self.num_classes = num_classes
        self.pad_multiple = pad_multiple  # the collator pads lengths to a multiple of this
        self.encoder = encoder
        self.backbone = backbone
        pooled = 2 * hidden_size if head == "retrieval" else hidden_size
        self.classifier = ClassifierHead(
            pooled, classifier_hidden_size or 2 * hidden_size, num_classes, classifier_dropout
        )

    def encode(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) inputs -> (B, d) pooled representations."""
        hidden = self.backbone(self.encoder(x), mask)  # (B, L, d)
        return masked_mean_pool(hidden, mask, lengths)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = batch["input_ids"] if "input_ids" in batch else batch["inputs"]
        mask, lengths = batch["attention_mask"], batch["lengths"]
        if self.head_kind == "retrieval":
            b, _, length = x.shape  # (B, 2, L): both documents in one backbone call
            pooled = self.encode(
                x.reshape(2 * b, length), mask.reshape(2 * b, length), lengths.reshape(2 * b)
            )
            pooled = pooled.view(b, -1)  # (B, 2d) = [u, v]
        else:
            pooled = self.encode(x, mask, lengths)
        return self.classifier(pooled)


def _encoder(
    input_kind: str, vocab_size: int | None, dim: int, pad_id: int, std: float | None, scale
) -> nn.Module:
    if input_kind == "tokens":
        if not vocab_size:
            raise ValueError("model.vocab_size must be set for token inputs (task.vocab_size)")
        return TokenEncoder(vocab_size, dim, pad_id=pad_id, std=std, scale=scale)
    return RealNumberEncoder(dim)


class MegaClassifier(LRAClassifier):
    """Mega / Mega-chunk on an LRA task; keyword arguments = `MegaConfig` fields + the rest."""

    def __init__(
        self,
        *,
        num_classes: int,
        input_kind: str = "tokens",
        head: str = "pooled",
        vocab_size: int | None = None,
        pad_id: int = 0,
        classifier_hidden_size: int | None = None,
        classifier_dropout: float | None = None,
        gradient_checkpointing: bool = False,
        name: str = "mega",
        **mega_fields: Any,
    ) -> None:
        fields = dict(mega_fields)
        known = set(MegaConfig().to_dict()) - {"model_type", "vocab_size", "pad_token_id"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"model.{unknown[0]}: not a MegaConfig field (see mega_lra/configuration.py); "
                "check the spelling"
            )
        # a pre-norm stack ends with a norm (the original LRA encoder's final_norm)
        fields.setdefault("final_norm", bool(fields.get("normalize_before_mega", True)))
        config = MegaConfig(vocab_size=vocab_size or 1, pad_token_id=pad_id, **fields)
        chunk = config.effective_chunk_size
        super().__init__(
            _encoder(input_kind, vocab_size, config.hidden_size, pad_id, None, 1.0),
            MegaBackbone(config, gradient_checkpointing=gradient_checkpointing),
            config.hidden_size,
            num_classes,
            head=head,
            input_kind=input_kind,
            classifier_hidden_size=classifier_hidden_size or config.intermediate_size,
            classifier_dropout=(
                config.dropout_prob if classifier_dropout is None else classifier_dropout
            ),
            name=name,
            pad_multiple=chunk if chunk > 0 else 0,
        )
        self.config = config


class TransformerClassifier(LRAClassifier):
    """The XFM‡ baseline on an LRA task; keyword arguments = `TransformerConfig` fields + rest.

    Same encoders, pooling and head as Mega; token embeddings as fairseq's Transformer
    (N(0, 0.02), times sqrt(d)); padding is masked in attention (never pixel value 0)."""

    def __init__(
        self,
        *,
        num_classes: int,
        input_kind: str = "tokens",
        head: str = "pooled",
        vocab_size: int | None = None,
        pad_id: int = 0,
        classifier_hidden_size: int | None = None,
        classifier_dropout: float | None = None,
        name: str = "transformer",
        **transformer_fields: Any,
    ) -> None:
        known = {f.name for f in dataclasses.fields(TransformerConfig)}
        unknown = sorted(set(transformer_fields) - known)
        if unknown:
            raise ValueError(
                f"model.{unknown[0]}: not a TransformerConfig field; expected one of "
                f"{sorted(known - {'vocab_size'})}"
            )
        config = TransformerConfig(vocab_size=vocab_size or 1, **transformer_fields)
        d = config.hidden_size
        scale = math.sqrt(d) if config.scale_embedding else 1.0
        super().__init__(
            _encoder(input_kind, vocab_size, d, pad_id, 0.02, scale),
            TransformerBackbone(config),
            d,
            num_classes,
            head=head,
            input_kind=input_kind,
            classifier_hidden_size=classifier_hidden_size or 2 * d,
            classifier_dropout=(
                config.dropout_prob if classifier_dropout is None else classifier_dropout
            ),
            name=name,
        )
        self.config = config


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
