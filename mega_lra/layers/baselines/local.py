"""Local attention (LRA's "Local Attention" row): softmax attention inside non-overlapping blocks
of `window_size` tokens, O(L * w * d).

    blocks B_j = {j w, ..., j w + w - 1}
    y_i = sum_{k in B(i), k real} softmax_k(q_i . k_k / sqrt(d)) v_k

with Q, K, V, out bias-free and Xavier-uniform (`projections.HeadProjections`). The length is
padded inside to a multiple of w (the padding masked) and cut back; padded keys never reach a real
token. LRA's width is its `block_size` (50 on the text tasks, 64 on the image tasks), named
`window_size` here.

`lra_quirks=True` computes LRA's `local_attention.py` as coded (reference/lra_baselines.md §3.7):
- the length is padded by w - (L mod w) zero tokens (a whole extra block when L is already a
  multiple) to L' = n w, and (B, L', h, d) is reshaped to (B, w, n, h, d) with attention over the
  w axis, so token t joins the *strided* group {t mod n + i n : i < w}, not a contiguous block;
- the padding mask is reshaped the other way, as contiguous chunks: in group g, member s attends
  to member s' iff m[g w + s] and m[g w + s'], where m is the real-token mask with the added
  positions counted as real (LRA pads the boolean mask with -1e9, which casts to True). A row with
  no allowed key gets uniform weights over its group (LRA's -1e10 bias swamps the float32 logits).
Real tokens' outputs then depend on the padding; the quirk exists to reproduce LRA's numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections, pad_to_multiple


def masked_block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), over the allowed keys) v, batched over the leading axes.

    q (..., Lq, d), k and v (..., Lk, d), allowed bool broadcastable to (..., Lq, Lk) ->
    (..., Lq, d). A row with no allowed key gets uniform weights (finite, never NaN)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))  # (..., Lq, Lk)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = F.dropout(scores.softmax(-1), dropout, training)
    return weights @ v


class LocalAttention(nn.Module):
    """x (B, L, D), mask (B, L) -> (B, L, D): attention within blocks of `window_size` tokens."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
        *,
        window_size: int = 50,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__()
        if window_size < 1:
            raise ValueError(f"model.window_size={window_size}: expected a positive integer")
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.window_size = window_size
        self.lra_quirks = lra_quirks
        self.attention_dropout = attention_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        if self.lra_quirks:
            return self._strided(x, mask.to(torch.bool))
        w = self.window_size
        x, keep, length = pad_to_multiple(x, mask.to(torch.bool), w)
        b, padded = keep.shape
        n = padded // w
        q, k, v = (
            t.reshape(b, -1, n, w, t.size(-1))  # (B, h, L', d) -> (B, h, n, w, d)
            for t in (self.proj.queries(x), self.proj.keys(x), self.proj.values(x))
        )
        allowed = keep.view(b, 1, n, 1, w)  # keys of the same block that are real
        y = masked_block_attention(q, k, v, allowed, self.attention_dropout, self.training)
        y = y.reshape(b, -1, padded, y.size(-1))  # (B, h, L', d)
        return self.proj.output(y)[:, :length]

    def _strided(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """LRA as coded: strided groups, misaligned mask (module docstring)."""
        w = self.window_size
        length = x.size(1)
        extra = w - length % w  # 1 ... w: a whole extra block when L is a multiple of w
        x = F.pad(x, (0, 0, 0, extra))
        keep = F.pad(keep, (0, extra), value=True)  # LRA's -1e9 pad value casts to True
        b, padded = keep.shape
        n = padded // w

        def groups(t: torch.Tensor) -> torch.Tensor:
            # (B, h, L', d) -> (B, h, w, n, d): token s n + g at [s, g] -> (B, h, n, w, d)
            return t.reshape(b, t.size(1), w, n, t.size(-1)).transpose(2, 3)

        q, k, v = (
            groups(t) for t in (self.proj.queries(x), self.proj.keys(x), self.proj.values(x))
        )
        chunks = keep.view(b, n, w)  # the mask as contiguous chunks: chunks[g, s] = m[g w + s]
        allowed = (chunks[:, :, :, None] & chunks[:, :, None, :]).unsqueeze(1)  # (B, 1, n, w, w)
        y = masked_block_attention(q, k, v, allowed, self.attention_dropout, self.training)
        y = y.transpose(2, 3).reshape(b, -1, padded, y.size(-1))  # back to (B, h, L', d)
        return self.proj.output(y)[:, :length]
