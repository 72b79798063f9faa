"""Input encoders of the LRA classifiers (original `mega_lra_encoder.py`, paper §4.1).

- `TokenEncoder`: an embedding table, N(0, std) with the pad row zeroed, times a constant
  `scale`. Mega uses std = d^-1/2 and scale 1 (no sqrt(d) scaling, no positions); the fairseq
  Transformer baseline uses std 0.02 (`init_bert_params`) and scale sqrt(d).
- `RealNumberEncoder`: pixels and audio samples, one real number per step, e = x * w + b with
  w ~ N(0, 1) and b ~ N(0, 0.1), both of size d (the original's `RealNumberEmbedding`).
- `SinusoidalPositions`: fairseq's sinusoidal position embedding, added to either encoder's
  output when a model asks for positions (the XFM‡ Transformer does; Mega has none). Real tokens
  are numbered padding_idx + 1, padding_idx + 2, ... from each row's first real token (fairseq's
  `make_positions`), padded positions keep padding_idx, whose embedding is zero. The sinusoid: sin
  over the first d/2 features, cos over the rest, frequencies exp(-i ln(10000) / (d/2 - 1)).
- `LearnedPositions`: LRA's learned position embedding (`learn_pos_emb`, its Image and Path-X
  configs): a (max_length, d) table N(0, 0.02), row t added at column t.
Encoders map a (B, L) input to (B, L, d).
"""

from __future__ import annotations

import math

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


def sinusoidal_embedding(positions: torch.Tensor, dim: int, padding_idx: int) -> torch.Tensor:
    """fairseq's sinusoid for integer positions (...,) -> (..., dim); zero at padding_idx."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * -step)
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs  # (..., d/2)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return emb.masked_fill((positions == padding_idx).unsqueeze(-1), 0.0)


class SinusoidalPositions(nn.Module):
    """Adds fairseq's sinusoidal positions to (B, L, d) embeddings; no parameters."""

    def __init__(self, dim: int, padding_idx: int = 1) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even hidden_size, got {dim}")
        self.dim = dim
        self.padding_idx = padding_idx

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d), mask (B, L) bool (True = real token) -> x + P (B, L, d)."""
        pad = self.padding_idx
        positions = torch.where(mask, mask.long().cumsum(dim=1) + pad, pad)  # (B, L)
        return x + sinusoidal_embedding(positions, self.dim, pad).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, padding_idx={self.padding_idx}"


class LearnedPositions(nn.Module):
    """Adds a learned (max_length, d) position table to (B, L, d) embeddings (LRA's
    `AddPositionEmbs` with `learn_pos_emb`: init N(0, 0.02), position t = column t)."""

    def __init__(self, max_length: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_length, dim))
        nn.init.normal_(self.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = x.size(1)
        if length > self.weight.size(0):
            raise ValueError(
                f"sequence length {length} exceeds the learned positions' max_length "
                f"{self.weight.size(0)}"
            )
        return x + self.weight[:length].to(x.dtype)
