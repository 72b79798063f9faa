"""Relative positional biases added to Mega's attention logits (paper §3.2, original
`relative_positional_bias.py`). Both depend only on the offset j - i between key j and query i.

- `SimpleRelativePositionalBias`: one learned scalar per offset, table `rel_pos_bias` of 2M-1
  entries; bias[i, j] = rel_pos_bias[center + j - i]. The original code sizes M to the chunk (or to
  max_positions) and centres the table (center = M-1). HF keeps a 2*max_positions-1 table but
  centres it on chunk_size-1 whenever chunk_size >= 0 (`MegaConfig.relative_bias_center`); both
  layouts are supported so HF checkpoints reproduce HF's outputs. An offset outside the table is
  a clear error naming the length that does not fit.
- `RotaryRelativePositionalBias`: learned vectors a = `alpha` and b = `b_param`, each (1, Z);
  bias[i, j] = rot(a, i) . rot(b, j) with the half-split rotary rotation (base 10000). The
  sinusoid angles are computed in max(parameter dtype, float32): float32 as in the original and
  HF for float32/bf16 models, float64 for float64 models (so float64 really is float64).

Both take integer position tensors, so one code path serves full attention, chunks (positions
0..C-1), blocks of a long sequence and single decoding steps (per-row query positions).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SimpleRelativePositionalBias(nn.Module):
    def __init__(self, max_positions: int, center: int | None = None, std: float = 0.02) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.center = max_positions - 1 if center is None else center
        self.rel_pos_bias = nn.Parameter(torch.empty(2 * max_positions - 1))
        self.std = std
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.rel_pos_bias, 0.0, self.std)

    def max_length(self) -> int:
        """Longest span of positions (0..L-1) whose offsets all fit in the table."""
        return min(self.center + 1, 2 * self.max_positions - 1 - self.center)

    def check_length(self, length: int) -> None:
        if length > self.max_length():
            raise ValueError(
                f"sequence (or chunk) length {length} exceeds what the simple relative positional "
                f"bias covers ({self.max_length()} positions: table of {2 * self.max_positions - 1}"
                f" entries centred at {self.center}); raise max_positions, use chunking, or use "
                "relative_positional_bias='rotary'"
            )

    def forward(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """query_pos (..., Lq) and key_pos (..., Lk) integer tensors -> bias (..., Lq, Lk)."""
        index = self.center + key_pos.unsqueeze(-2) - query_pos.unsqueeze(-1)
        return self.rel_pos_bias[index.clamp(0, self.rel_pos_bias.numel() - 1)]

    def matrix(self, length: int) -> torch.Tensor:
        """(L, L) bias for positions 0..L-1."""
        self.check_length(length)
        pos = torch.arange(length, device=self.rel_pos_bias.device)
        return self(pos, pos)


class RotaryRelativePositionalBias(nn.Module):
    def __init__(self, dim: int, std: float = 0.02) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary relative bias needs an even dimension, got {dim}")
        self.dim = dim
        self.std = std
        self.alpha = nn.Parameter(torch.empty(1, dim))
        self.b_param = nn.Parameter(torch.empty(1, dim))
        # HF saves this (unused) persistent buffer; kept so state dicts match key for key.
        self.register_buffer("_float_tensor", torch.zeros(1), persistent=True)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.alpha, 0.0, self.std)
        nn.init.normal_(self.b_param, 0.0, self.std)

    def max_length(self) -> int:
        return 1 << 62

    def check_length(self, length: int) -> None:
        return None

    def _rotate(self, vec: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """vec (1, Z) rotated at integer positions pos (...,) -> (..., Z)."""
        half = self.dim // 2
        step = math.log(10000) / half
        dtype = torch.promote_types(vec.dtype, torch.float32)
        freqs = torch.exp(torch.arange(half, device=pos.device, dtype=dtype) * -step)
        angles = pos.to(dtype).unsqueeze(-1) * freqs  # (..., Z/2)
        sin, cos = angles.sin().to(vec.dtype), angles.cos().to(vec.dtype)
        v1, v2 = vec[0, :half], vec[0, half:]
        return torch.cat([v1 * cos - v2 * sin, v2 * cos + v1 * sin], dim=-1)

    def factors(
        self, query_pos: torch.Tensor, key_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rot(a, query_pos) (..., Lq, Z), rot(b, key_pos) (..., Lk, Z)): bias = a @ b^T."""
        return self._rotate(self.alpha, query_pos), self._rotate(self.b_param, key_pos)

    def forward(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """query_pos (..., Lq) and key_pos (..., Lk) integer tensors -> bias (..., Lq, Lk)."""
        a, b = self.factors(query_pos, key_pos)
        return a @ b.transpose(-1, -2)

    def matrix(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, device=self.alpha.device)
        return self(pos, pos)
