"""Pooling and classifier head of the LRA models (original `LRAModel`, `sen_rep_type=mp`).

- `masked_mean_pool`: sum over time of the (already zero-padded) hidden states divided by the
  true lengths (the original's `src_lengths`, before any chunk padding).
- `last_token_pool`: the hidden state at each row's last real position (`lengths - 1`), the S4
  suite's `SequenceDecoder(mode="last", use_lengths=True)`.
- `nli_features`: the retrieval pair as [u, v, u * v, u - v] (the original LRA's and the S4
  suite's `RetrievalDecoder(nli=True)` features; S4 orders them [u, v, u - v, u * v], the same
  Linear up to a permutation of its input columns).
- `ClassifierHead`: Linear(in, hidden) (Xavier-uniform weight, zero bias) -> dropout -> GELU ->
  bias-free Linear(hidden, classes) (Xavier-uniform too: the original's `sentence_projection_layer`
  is built with fairseq's `Linear()` helper, which initialises it so). For retrieval, `in` = 2d:
  the two documents' pooled vectors concatenated, as Mega's original (no product or difference
  features, unlike the original LRA); 4d with the classifier's `retrieval_features: nli`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean_pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, L, d) hidden states, (B, L) mask (1 = real) -> (B, d) mean over real positions."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (hidden * mask).sum(dim=1)  # (B, d)
    count = mask.sum(dim=1) if lengths is None else lengths.to(hidden.dtype).unsqueeze(-1)
    return total / count.clamp_min(1.0)


def last_token_pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, L, d) hidden states -> (B, d) the state at each row's last real position (from
    `lengths`, else from the mask's count of real positions)."""
    if lengths is None:
        lengths = attention_mask.to(torch.long).sum(dim=1)
    last = (lengths.to(torch.long) - 1).clamp_min(0)  # (B,)
    index = last.view(-1, 1, 1).expand(-1, 1, hidden.size(-1))  # (B, 1, d)
    return hidden.gather(1, index).squeeze(1)  # (B, d)


def nli_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, d), (B, d) -> (B, 4d) = [u, v, u * v, u - v]."""
    return torch.cat([u, v, u * v, u - v], dim=-1)


class ClassifierHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden_dim)
        self.dropout = dropout
        self.out = nn.Linear(hidden_dim, num_classes, bias=False)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.dense(pooled), self.dropout, self.training)  # (B, hidden)
        return self.out(F.gelu(x))  # (B, classes)
