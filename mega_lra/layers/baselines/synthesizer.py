"""Synthesizer attention (Tay et al. 2021, "Synthesizer: Rethinking Self-Attention"), as LRA runs
it: synthesized alignment logits, added to the dot product when `use_dot_product` (the paper's
"+ dot product" mixture, LRA's `ignore_dot_product=False`). O(L^2) by nature.

    logits_h = [Q_h K_h^T / sqrt(d)] + S_h                       (B, h, L, L)
    y        = W_O concat_h softmax(logits_h + M) V_h            M = -inf at padded keys

S_h by `synthesizer_mode` (M = `max_length`, the task's length; k = `factor_rank`):
- `random` (LRA's on every task; paper's "Random", eq. 4): S_h = R_h[:L, :L], R a learned
  (h, M, M) parameter shared across the batch, Xavier-uniform with flax's fans for that shape
  (fan_in = fan_out = h * M).
- `factorized_random` (paper's "Factorized Random"): S_h = (R1_h R2_h)[:L, :L], R1 (h, M, k),
  R2 (h, k, M), Xavier-uniform with flax's fans.
- `dense` (paper's "Dense", eq. 2): S_h[i] = W_2 ReLU(W_1 x_i)_h, W_1: D -> h * d per token,
  split over heads, W_2: d -> M shared by heads, bias-free as LRA's block passes bias=False; the
  (B, L, h, M) result is *transposed* to (B, h, L, M) and cut to (B, h, L, L). LRA's code reshapes
  instead of transposing, which scrambles tokens and heads: not reproduced.
Without the dot product Q and K do not exist (the paper's pure synthesizers); unlike LRA's
`ignore_dot_product` path, V keeps its own projection and padding stays masked.

R costs h * M^2 parameters per layer; `random` refuses more than MAX_RANDOM_PARAMETERS (Path-X's
M = 16384 would need h * 2.7e8), as LRA never ran it beyond 4K.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import head_size, merge_heads, split_heads, xavier_linear

MODES = ("random", "factorized_random", "dense")
MAX_RANDOM_PARAMETERS = 2**27  # per layer: 512 MiB in float32 (Text/Retrieval at 4K, h = 4: 6.4e7)


def flax_xavier_(param: torch.Tensor) -> torch.Tensor:
    """flax's xavier_uniform for a (..., fan_in_axis, fan_out_axis) kernel: the leading axes
    multiply both fans (the receptive field)."""
    *lead, fan_in, fan_out = param.shape
    field = math.prod(lead)
    bound = math.sqrt(6.0 / (field * fan_in + field * fan_out))
    return nn.init.uniform_(param, -bound, bound)


class SynthesizerAttention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None,
        *,
        synthesizer_mode: str = "random",
        use_dot_product: bool = True,
        factor_rank: int = 32,
    ) -> None:
        super().__init__()
        if synthesizer_mode not in MODES:
            raise ValueError(
                f"model.synthesizer_mode={synthesizer_mode!r}: expected one of {MODES}"
            )
        if max_length is None or max_length < 1:
            raise ValueError(
                f"the Synthesizer needs the task's max_length (its alignment is max_length wide); "
                f"got {max_length}"
            )
        h = num_attention_heads
        qkv_size = qkv_size or hidden_size
        d = head_size(qkv_size, h)
        self.num_heads, self.head_size, self.max_length = h, d, max_length
        self.mode, self.use_dot_product = synthesizer_mode, use_dot_product
        self.attention_dropout = attention_dropout_prob
        if use_dot_product:
            self.query = xavier_linear(hidden_size, qkv_size)
            self.key = xavier_linear(hidden_size, qkv_size)
        self.value = xavier_linear(hidden_size, qkv_size)
        self.out = xavier_linear(qkv_size, hidden_size)
        if synthesizer_mode == "random":
            if h * max_length**2 > MAX_RANDOM_PARAMETERS:
                raise ValueError(
                    f"model.synthesizer_mode=random at max_length={max_length} with {h} heads: "
                    f"R needs h * max_length^2 = {h * max_length**2:,} parameters per layer (limit "
                    f"{MAX_RANDOM_PARAMETERS:,}); LRA ran it only up to 4K (Path-X: not run). Use "
                    "synthesizer_mode=factorized_random or dense, or a shorter task length."
                )
            self.random = nn.Parameter(flax_xavier_(torch.empty(h, max_length, max_length)))
        elif synthesizer_mode == "factorized_random":
            if factor_rank < 1:
                raise ValueError(f"model.factor_rank={factor_rank}: expected >= 1")
            self.random1 = nn.Parameter(flax_xavier_(torch.empty(h, max_length, factor_rank)))
            self.random2 = nn.Parameter(flax_xavier_(torch.empty(h, factor_rank, max_length)))
        else:
            self.dense1 = xavier_linear(hidden_size, qkv_size)
            self.dense2 = xavier_linear(d, max_length)

    def synthesized(self, x: torch.Tensor) -> torch.Tensor:
        """S: (h, L, L) for the random modes, (B, h, L, L) for dense."""
        length = x.size(1)
        if self.mode == "random":
            return self.random[:, :length, :length]
        if self.mode == "factorized_random":
            return torch.matmul(self.random1[:, :length], self.random2[:, :, :length])
        b = x.size(0)
        hidden = F.relu(self.dense1(x)).view(b, length, self.num_heads, self.head_size)
        rows = self.dense2(hidden)  # (B, L, h, M)
        return rows.transpose(1, 2)[..., :length]  # (B, h, L, L)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        length = x.size(1)
        if length > self.max_length:
            raise ValueError(
                f"sequence length {length} exceeds the Synthesizer's max_length {self.max_length}"
            )
        logits = self.synthesized(x)
        if self.use_dot_product:
            q = split_heads(self.query(x), self.num_heads) * self.head_size**-0.5  # (B, h, L, d)
            k = split_heads(self.key(x), self.num_heads)
            logits = torch.matmul(q, k.transpose(-1, -2)) + logits  # (B, h, L, L)
        keep = mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, L)
        logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
        probs = F.dropout(logits.softmax(dim=-1), self.attention_dropout, self.training)
        v = split_heads(self.value(x), self.num_heads)  # (B, h, L, d)
        return self.out(merge_heads(torch.matmul(probs, v)))
