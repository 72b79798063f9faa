"""Linformer's low-rank attention (Wang et al. 2020, eq. 7): keys and values are projected along
the sequence axis to k rows before a softmax attention, so the cost is O(L k d), linear in L.

    K' = E^T K,  V' = F^T V          E, F in R^{n x k} (n = max_length), per layer
    y  = W_O softmax(Q K'^T / sqrt(d)) V'

Symbols -> names: k = `projected_length`, n = `max_length`, E = `key_projection`, F =
`value_projection` (`share_kv=True`, LRA's "key-value sharing": F = E, one matrix per layer shared
by K, V and the heads; `share_kv=False`: the paper's separate E and F). E and F are Xavier-uniform
with fan_in n, fan_out k, as LRA's `lr_kernel`. Q, K, V and the output projection W_O are the
suite's bias-free Xavier `HeadProjections`. A shorter input of L < n tokens uses E[:L].

Padding: by default the rows of K and V at padded positions are zeroed before the projection,
so the E rows of padded positions contribute nothing and a real token's output does not depend on
how much padding follows it (E rows are indexed by absolute position, so the same token at the
same position sees the same E rows). LRA's code masks nothing: padded tokens are mixed into K'
and V'; `mask_padding=False` reproduces that (the backbone's `lra_quirks: true`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections


def length_projection(max_length: int, projected_length: int) -> nn.Parameter:
    """An (n, k) length-projection matrix, Xavier-uniform with fan_in n and fan_out k."""
    bound = math.sqrt(6.0 / (max_length + projected_length))
    return nn.Parameter(torch.empty(max_length, projected_length).uniform_(-bound, bound))


class LowRankAttention(nn.Module):
    """Linformer self-attention: x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None,
        *,
        projected_length: int = 16,
        share_kv: bool = True,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        if not max_length:
            raise ValueError(
                "Linformer needs the task's max_length (its length projection E has one row per "
                f"position); got max_length={max_length!r}"
            )
        if projected_length < 1:
            raise ValueError(f"model.projected_length={projected_length}: expected >= 1")
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.max_length = int(max_length)
        self.projected_length = int(projected_length)
        self.share_kv = share_kv
        self.mask_padding = mask_padding
        self.attention_dropout_prob = attention_dropout_prob
        self.key_projection = length_projection(self.max_length, self.projected_length)  # E
        self.value_projection = (
            None if share_kv else length_projection(self.max_length, self.projected_length)  # F
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = x.size(1)
        if length > self.max_length:
            raise ValueError(
                f"Linformer: input length {length} exceeds max_length {self.max_length} "
                "(the rows of its length projection)"
            )
        e = self.key_projection[:length]  # (L, k)
        f = e if self.value_projection is None else self.value_projection[:length]
        q = self.proj.queries(x) / math.sqrt(self.proj.head_size)  # (B, h, L, d)
        k, v = self.proj.keys(x), self.proj.values(x)  # (B, h, L, d)
        if self.mask_padding:  # zero the K and V rows of padded positions
            keep = mask[:, None, :, None].to(k.dtype)  # (B, 1, L, 1)
            k, v = k * keep, v * keep
        k = torch.einsum("bhld,lk->bhkd", k, e)  # (B, h, k, d)
        v = torch.einsum("bhld,lk->bhkd", v, f)  # (B, h, k, d)
        weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (B, h, L, k)
        weights = F.dropout(weights, self.attention_dropout_prob, self.training)
        return self.proj.output(weights @ v)  # (B, h, L, d) -> (B, L, D)
