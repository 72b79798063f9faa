"""Mega and Mega-chunk as a backbone of the LRA classifier: the original `MegaLRAEncoder` after
its embedding (`mega_paper_and_code.md` §1.5).

    dropout -> zero the padded positions -> Mega blocks (`mega_lra.layers`) -> final norm
    (pre-norm stacks only, the original's `final_norm`) -> zero the padded positions again

Every field is a `MegaConfig` field by name (`chunk_size`, `attention_activation`, ...), so
`model.chunk_size=64` on the command line reaches the layers; Mega and Mega-chunk differ only in
`use_chunking` / `chunk_size`. `max_positions` (the simple relative bias's table without
chunking) defaults to the task's length (`max_length`); a recipe may set the original's own
value. Lengths are padded to a multiple of the chunk size (`pad_multiple`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mega_lra.hf.configuration import MegaConfig
from mega_lra.layers import MegaBlock, SequenceNorm, run_blocks
from mega_lra.layers.dropout import SequenceDropout

# MegaConfig fields a backbone does not take: the HF model family's, not the layers'
NOT_BACKBONE_FIELDS = ("model_type", "vocab_size", "pad_token_id")


def mega_fields() -> list[str]:
    """Every field `MegaBackbone` accepts (the layers' `MegaConfig` fields)."""
    return sorted(set(MegaConfig().to_dict()) - set(NOT_BACKBONE_FIELDS))


class MegaBackbone(nn.Module):
    def __init__(
        self,
        hidden_size: int = 128,
        *,
        max_length: int | None = None,
        gradient_checkpointing: bool = False,
        **fields: Any,
    ) -> None:
        super().__init__()
        known = mega_fields()
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(
                f"model.{unknown[0]}: not a field of MegaBackbone (a MegaConfig field, see "
                f"mega_lra/hf/configuration.py); expected one of {known}"
            )
        if fields.get("max_positions") is None:
            fields["max_positions"] = max_length or MegaConfig().max_positions
        fields.setdefault("relative_bias_layout", "original")  # the bias table of fairseq's code
        # a pre-norm stack ends with a norm (the original LRA encoder's final_norm)
        fields.setdefault("final_norm", bool(fields.get("normalize_before_mega", True)))
        config = MegaConfig(hidden_size=hidden_size, vocab_size=1, **fields)
        self.config = config
        self.dropout_prob = config.dropout_prob
        chunk = config.effective_chunk_size
        self.pad_multiple = chunk if chunk > 0 else 0  # the collator pads lengths to this
        self.dropout = SequenceDropout(config.dropout_prob, config.use_feature_dropout)
        self.layers = nn.ModuleList(MegaBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = SequenceNorm.from_config(config) if config.final_norm else None
        self.gradient_checkpointing = gradient_checkpointing

    @property
    def causal(self) -> bool:
        """Output at t depends only on positions <= t: causal attention and a one-sided EMA."""
        return bool(self.config.is_decoder) and not self.config.bidirectional

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {
            "mixer": "mega",
            "attention_activation": c.attention_activation,
            "chunk_size": c.effective_chunk_size,  # -1: full attention
            "ema_projection_size": c.ema_projection_size,  # 0: no EMA
            "ema_kernel": c.ema_kernel,  # ema | s4d (Mega with an S4D kernel)
            "normalization_type": c.normalization_type,
            "relative_positional_bias": c.relative_positional_bias,
            "num_hidden_layers": c.num_hidden_layers,
            "bidirectional": c.bidirectional,
        }

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d), mask (B, L) bool (True = real token) -> (B, L, d)."""
        keep = mask.to(torch.bool)  # (B, L)
        zero_pad = keep.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = self.dropout(x) * zero_pad
        x, _, _ = run_blocks(
            self.layers,
            x,
            keep,
            gradient_checkpointing=self.gradient_checkpointing and self.training,
        )
        if self.final_norm is not None:
            x = self.final_norm(x, keep)
        return x * zero_pad
