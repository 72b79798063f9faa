"""LRA's encoder block stack (reference/transformer_baselines.md §1), with the attention as a
part: every attention baseline of LRA shares it and changes only the self-attention module
(reference/lra_baselines.md §0.1).

    x_0 = dropout(embeddings), padded rows zeroed
    a   = x + dropout(Attn(LN(x), mask))                  pre-LN
    x'  = a + dropout(W_2 dropout(GELU(W_1 LN(a))))       padded rows zeroed

The final LayerNorm after the stack is the classifier's `final_layernorm: true` (set in each
model's conf/model file). The FFN Linears have biases, Xavier-uniform weights and biases
N(0, 1e-6), as LRA's Dense layers in the MLP block. Field names: D = `hidden_size`,
layers = `num_hidden_layers`, FFN width = `ffn_hidden_size` (LRA's `mlp_dim`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """W_2 dropout(GELU(W_1 x)): D -> ffn_hidden_size -> D (LRA's MlpBlock)."""

    def __init__(self, hidden_size: int, ffn_hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, ffn_hidden_size)
        self.fc2 = nn.Linear(ffn_hidden_size, hidden_size)
        self.dropout = dropout_prob
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(F.gelu(self.fc1(x)), self.dropout, self.training)
        return self.fc2(hidden)


class PreLNBlock(nn.Module):
    """One pre-LN encoder block around any attention module `attn(x, mask) -> y`."""

    def __init__(
        self, hidden_size: int, ffn_hidden_size: int, dropout_prob: float, attention: nn.Module
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attention = attention
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.ffn = FeedForward(hidden_size, ffn_hidden_size, dropout_prob)
        self.dropout = dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        x = x + F.dropout(self.attention(self.attn_norm(x), mask), self.dropout, self.training)
        return x + F.dropout(self.ffn(self.ffn_norm(x)), self.dropout, self.training)


class PreLNStack(nn.Module):
    """Embeddings (B, L, D) + mask (B, L) -> hidden states (B, L, D) through `num_hidden_layers`
    pre-LN blocks, each with a fresh `attention()` module.

    A baseline's backbone subclasses this with an explicit signature (the classifier checks the
    model file's keys against it) and passes its attention factory and an `info` dict for
    `describe()`. `quadratic`: whether the method's cost grows as L^2 (the tests skip 16K fits of
    those on CPU)."""

    quadratic = False

    def __init__(
        self,
        hidden_size: int,
        num_hidden_layers: int,
        ffn_hidden_size: int,
        dropout_prob: float,
        *,
        attention: Callable[[], nn.Module],
        max_length: int | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_hidden_layers < 1:
            raise ValueError(f"model.num_hidden_layers={num_hidden_layers}: expected >= 1")
        self.hidden_size = hidden_size
        self.dropout_prob = dropout_prob
        self.max_length = max_length
        self.info = dict(info or {})
        self.layers = nn.ModuleList(
            PreLNBlock(hidden_size, ffn_hidden_size, dropout_prob, attention())
            for _ in range(num_hidden_layers)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "normalization_type": "layernorm",
            "prenorm": True,
            "num_hidden_layers": len(self.layers),
            **self.info,
        }

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) embeddings (positions already added), mask (B, L) bool -> (B, L, D)."""
        length = x.size(1)
        if self.max_length is not None and length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        keep = mask.to(torch.bool)
        zero_pad = keep.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = F.dropout(x, self.dropout_prob, self.training) * zero_pad
        for layer in self.layers:
            x = layer(x, keep) * zero_pad
        return x
