"""Normalised feed-forward network, the second sub-layer of a Mega block (paper §3.3 eq. 17;
original `normalized_feedforward_network.py`):

    Y = X + dropout(W_2 hidden_dropout(act(W_1 norm(X))))     (pre-norm)
    Y = norm(X + dropout(W_2 hidden_dropout(act(W_1 X))))     (post-norm)

`fc1`: D -> F, `fc2`: F -> D (F = `nffn_hidden_size`; 2D in every LRA recipe), init N(0, 0.02)
with zero biases; the norm is `norm.norm.*` as in HF's state dicts.
"""

from __future__ import annotations

import torch
from torch import nn

from mega_lra.hf.configuration import MegaConfig
from mega_lra.layers.activations import get_activation
from mega_lra.layers.dropout import SequenceDropout
from mega_lra.layers.norms import SequenceNorm


class NormalizedFeedForwardNetwork(nn.Module):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.nffn_hidden_size
        self.prenorm = config.normalize_before_ffn
        self.activation = get_activation(config.activation)
        self.init_std = config.initializer_range
        self.norm = SequenceNorm.from_config(config)
        self.fc1 = nn.Linear(d, f)
        self.fc2 = nn.Linear(f, d)
        self.hidden_dropout = SequenceDropout(
            config.nffn_activation_dropout_prob, config.use_feature_dropout
        )
        self.dropout = SequenceDropout(config.dropout_prob, config.use_feature_dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for linear in (self.fc1, self.fc2):
            nn.init.normal_(linear.weight, 0.0, self.init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); valid: (B, L) bool, 1 = real (only batchnorm looks at it)."""
        residual = x
        if self.prenorm:
            x = self.norm(x, valid)
        x = self.hidden_dropout(self.activation(self.fc1(x)))  # (B, L, F)
        x = self.dropout(self.fc2(x)) + residual
        if not self.prenorm:
            x = self.norm(x, valid)
        return x
