"""Dropout on (B, L, D) sequences: element-wise, or feature dropout (whole channels dropped for
every time step, the original's `FairseqFeatureDropout` / Dropout2d, `use_feature_dropout`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SequenceDropout(nn.Module):
    def __init__(self, p: float, feature: bool = False) -> None:
        super().__init__()
        self.p = p
        self.feature = feature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.feature and x.dim() == 3:
            # (B, L, D): one keep/drop draw per (batch, channel), shared over time
            return F.dropout1d(x.transpose(1, 2), self.p, training=True).transpose(1, 2)
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, feature={self.feature}"
