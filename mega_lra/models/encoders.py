"""Input encoders of the LRA classifiers (original `mega_lra_encoder.py`, paper §4.1).

- `TokenEncoder`: an embedding table, N(0, std) with the pad row zeroed, times a constant
  `scale`. Mega uses std = d^-1/2 and scale 1 (no sqrt(d) scaling, no positions); the fairseq
  Transformer baseline uses std 0.02 (`init_bert_params`) and scale sqrt(d).
- `RealNumberEncoder`: pixels and audio samples, one real number per step, e = x * w + b with
  w ~ N(0, 1) and b ~ N(0, 0.1), both of size d (the original's `RealNumberEmbedding`).
Both map a (B, L) input to (B, L, d).
"""

from __future__ import annotations

import torch
from torch import nn


class TokenEncoder(nn.Module):
    def __init__(
        self, vocab_size: int, dim: int, pad_id: int = 0, std: float | None = None, scale=1.0
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.std = dim**-0.5 if std is None else std
        self.scale = float(scale)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.embed.weight, 0.0, self.std)
        self.embed.weight[self.embed.padding_idx].zero_()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, L) -> (B, L, d)
        return x * self.scale if self.scale != 1.0 else x

    def extra_repr(self) -> str:
        return f"std={self.std:.4g}, scale={self.scale:.4g}"


class RealNumberEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0)
        nn.init.normal_(self.bias, 0.0, 0.1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # (B, L) -> (B, L, d): x * w + b
        return torch.addcmul(self.bias, inputs.unsqueeze(-1).to(self.weight.dtype), self.weight)
