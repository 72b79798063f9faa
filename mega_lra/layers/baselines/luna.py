"""Luna's linear unified nested attention (Ma et al. 2021, eqs. 5-7): pack the sequence into a
fixed-length context through an extra input P, then unpack it back to every position, so the cost
is O(L l D), linear in L for a fixed l.

    pack:    C_p = softmax(pq pk^T) pv      pq = W_pq P (D/h)^-1/2, pk = W_pk X, pv = W_pv X
                                            (padded positions of X masked out as keys)
    unpack:  Y   = W_o softmax(q k^T) v     q = W_q X (D/h)^-1/2, k = W_k C_p, v = W_v C_p
                                            (masked P slots masked out as keys)

Symbols -> names: X (B, L, D) = `x`, P (B, l, D) = `p`, C_p = `packed`, h = `num_attention_heads`
(used for both the pack and the unpack heads, as every LRA recipe of Luna sets them equal).
`tie_kv=True` uses one projection for pk and pv (W_pc) and one for k and v (W_c); LRA's Luna runs
untied (seven projections). C_p has no output projection. Every projection has a bias, as in
fairseq's `LunarMultiheadAttention`: Xavier-uniform weights with gain 1/sqrt(2) except W_o (plain
Xavier, zero bias); the other biases keep PyTorch's Linear default. Attention dropout is applied to
both softmaxes. Masked keys get the dtype's lowest value rather than -inf, so a fully masked row
(a sample with no real token) gives finite values instead of NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import head_size, merge_heads, split_heads


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis of scores (B, h, M, N), keys where key_mask (B, N) is False
    excluded."""
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


class LunaAttention(nn.Module):
    """Pack then unpack: `forward(x, p, mask, p_mask) -> (y, packed)`, x (B, L, D), p (B, l, D),
    mask (B, L) and p_mask (B, l) bool (True = real) -> y (B, L, D), packed C_p (B, l, D)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        attention_dropout_prob: float,
        *,
        tie_kv: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_attention_heads
        self.head_size = head_size(hidden_size, num_attention_heads)
        self.attention_dropout_prob = attention_dropout_prob
        self.tie_kv = tie_kv

        def linear() -> nn.Linear:
            return nn.Linear(hidden_size, hidden_size)

        self.pack_query = linear()  # W_pq
        self.pack_key = linear()  # W_pk (W_pc when tied)
        self.pack_value = None if tie_kv else linear()  # W_pv
        self.query = linear()  # W_q
        self.key = linear()  # W_k (W_c when tied)
        self.value = None if tie_kv else linear()  # W_v
        self.out = linear()  # W_o
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        gain = 1.0 / math.sqrt(2.0)
        for layer in (self.pack_query, self.pack_key, self.pack_value, self.query, self.key):
            if layer is not None:
                nn.init.xavier_uniform_(layer.weight, gain=gain)
        if self.value is not None:
            nn.init.xavier_uniform_(self.value.weight, gain=gain)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _attend(self, q, k, v, key_mask: torch.Tensor) -> torch.Tensor:
        """q (B, h, M, d) already scaled, k/v (B, h, N, d), key_mask (B, N) -> (B, h, M, d)."""
        weights = masked_softmax(q @ k.transpose(-1, -2), key_mask)  # (B, h, M, N)
        weights = F.dropout(weights, self.attention_dropout_prob, self.training)
        return weights @ v

    def pack(self, p: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """C_p (B, l, D): the l slots of P attend over the real tokens of X."""
        h, scale = self.num_heads, self.head_size**-0.5
        pq = split_heads(self.pack_query(p), h) * scale  # (B, h, l, d)
        pk = split_heads(self.pack_key(x), h)  # (B, h, L, d)
        pv = pk if self.pack_value is None else split_heads(self.pack_value(x), h)
        return merge_heads(self._attend(pq, pk, pv, mask))  # (B, l, D)

    def unpack(self, x: torch.Tensor, packed: torch.Tensor, p_mask: torch.Tensor) -> torch.Tensor:
        """Y (B, L, D): every position of X attends over the unmasked slots of C_p."""
        h, scale = self.num_heads, self.head_size**-0.5
        q = split_heads(self.query(x), h) * scale  # (B, h, L, d)
        k = split_heads(self.key(packed), h)  # (B, h, l, d)
        v = k if self.value is None else split_heads(self.value(packed), h)
        return self.out(merge_heads(self._attend(q, k, v, p_mask)))  # (B, L, D)

    def forward(
        self, x: torch.Tensor, p: torch.Tensor, mask: torch.Tensor, p_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        packed = self.pack(p, x, mask)
        return self.unpack(x, packed, p_mask), packed
