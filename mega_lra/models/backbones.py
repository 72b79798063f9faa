"""Backbones of the LRA classifiers: (B, L, d) embeddings + (B, L) mask -> (B, L, d).

- `MegaBackbone`: the original `MegaLRAEncoder` after its embedding: dropout -> zero the padded
  positions -> the Mega blocks (`mega_lra.layers`) -> final norm (pre-norm models only) -> zero
  the padded positions again. Mega and Mega-chunk differ only in `config.chunk_size`.
- `TransformerBackbone`: the XFM‡ baseline's encoder stack (`mega_lra.transformer`), which adds
  sinusoidal positions itself.
"""

from __future__ import annotations

import torch
from torch import nn

from mega_lra.configuration import MegaConfig
from mega_lra.layers import MegaBlock, SequenceNorm, run_blocks
from mega_lra.layers.dropout import SequenceDropout
from mega_lra.transformer import TransformerStack as TransformerBackbone

__all__ = ["MegaBackbone", "TransformerBackbone"]


class MegaBackbone(nn.Module):
    def __init__(self, config: MegaConfig, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.config = config
        self.dropout = SequenceDropout(config.dropout_prob, config.use_feature_dropout)
        self.layers = nn.ModuleList(MegaBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = SequenceNorm.from_config(config) if config.final_norm else None
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.to(torch.bool)  # (B, L)
        mask = keep.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = self.dropout(x) * mask
        x, _, _ = run_blocks(
            self.layers,
            x,
            keep,
            gradient_checkpointing=self.gradient_checkpointing and self.training,
        )
        if self.final_norm is not None:
            x = self.final_norm(x, keep)
        return x * mask
