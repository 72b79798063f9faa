"""Full softmax attention (the vanilla Transformer of LRA, `xfm`): O(L^2).

    y = W_O concat_h softmax(Q_h K_h^T / sqrt(d) + M) V_h

with Q, K, V = x W_Q, x W_K, x W_V (D -> qkv_size = h * d, bias-free) and M = -inf at padded keys.
Through `F.scaled_dot_product_attention`, which may take a fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections


class SoftmaxAttention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.attention_dropout = attention_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        q, k, v = self.proj.queries(x), self.proj.keys(x), self.proj.values(x)  # (B, h, L, d)
        keep = mask.to(torch.bool)
        key_mask = None if bool(keep.all()) else keep[:, None, None, :]  # (B, 1, 1, L)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return self.proj.output(y)
