"""Longformer's sliding-window attention as LRA uses it (reference/lra_baselines.md §3.9),
computed in banded blocks: O(L * (w + c) * d), never L x L.

    y_i = sum_{k : i - left < k <= i + right, k real} softmax_k(q_i . k_k / sqrt(d)) v_k
    right = floor(w / 2),  left = w - right   (the left side counts the token itself)

so the window w = `window_size` (LRA's `sliding_window_size`, 512 on every task) gives query i the
keys i - w/2 + 1 ... i + w/2 for an even w (256 on the left including itself, 256 on the right)
and i - (w-1)/2 ... i + (w-1)/2 for an odd w. Q, K, V, out are bias-free and Xavier-uniform.
LRA sets no global tokens on any task (`global_mask=None`), so none exist here; its six
projections (separate global Q/K/V that never reach the output) are four here.

The queries are cut into chunks of c = `query_chunk` tokens; each chunk attends to its key band of
c + left + right - 1 keys (an `unfold` view of the keys padded on both sides), with the window's
diagonal pattern and the padding as a mask. LRA builds the same pattern as a dense L x L mask
(LRA#13); the numbers are the same, the cost is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.local import masked_block_attention
from mega_lra.layers.baselines.projections import HeadProjections


def window_reach(window_size: int) -> tuple[int, int]:
    """(keys strictly left of the query, keys right of it) for LRA's window w: left side
    w - floor(w/2) including the query itself, right side floor(w/2)."""
    right = window_size // 2
    return window_size - right - 1, right


class SlidingWindowAttention(nn.Module):
    """x (B, L, D), mask (B, L) -> (B, L, D): each query attends to its window of keys."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
        *,
        window_size: int = 512,
        query_chunk: int | None = None,
    ) -> None:
        super().__init__()
        if window_size < 1:
            raise ValueError(f"model.window_size={window_size}: expected a positive integer")
        if query_chunk is not None and query_chunk < 1:
            raise ValueError(f"model.query_chunk={query_chunk}: expected a positive integer")
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.window_size = window_size
        # c ~ w / 4 balances the band's wasted corner (c / w) against the number of band copies
        self.query_chunk = query_chunk or max(16, window_size // 4)
        self.attention_dropout = attention_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        keep = mask.to(torch.bool)
        b, length = keep.shape
        left, right = window_reach(self.window_size)
        left, right = min(left, length - 1), min(right, length - 1)  # no key lies further out
        c = min(self.query_chunk, length)
        n = -(-length // c)  # query chunks
        band = c + left + right  # keys each chunk may see

        q = self.proj.queries(x)  # (B, h, L, d)
        q = F.pad(q, (0, 0, 0, n * c - length)).unflatten(2, (n, c))  # (B, h, n, c, d)
        # keys and values padded to `left` before and `right` + the chunk remainder after, then
        # chunk j's band = padded positions [j c, j c + band)
        #                = keys j c - left ... j c + c - 1 + right
        pad = (left, n * c - length + right)
        k, v = (
            F.pad(t, (0, 0, *pad)).unfold(2, band, c).transpose(-1, -2)  # (B, h, n, band, d)
            for t in (self.proj.keys(x), self.proj.values(x))
        )
        real = F.pad(keep, pad, value=False).unfold(1, band, c)  # (B, n, band)
        # query a of a chunk (absolute j c + a) sees band keys a ... a + left + right
        offset = torch.arange(band, device=x.device) - torch.arange(c, device=x.device)[:, None]
        in_window = (offset >= 0) & (offset <= left + right)  # (c, band)
        allowed = in_window & real[:, None, :, None, :]  # (B, 1, n, c, band)
        y = masked_block_attention(q, k, v, allowed, self.attention_dropout, self.training)
        y = y.flatten(2, 3)[:, :, :length]  # (B, h, L, d)
        return self.proj.output(y)
