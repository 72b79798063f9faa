"""The Sparse Transformer's fixed attention pattern (Child et al. 2019, §4.2 "fixed"), computed in
blocks: no L x L tensor is ever formed.

Paper's symbols -> names: stride l = `block_size`, c = `num_summary_columns`. For query i and key j

    A(1) = {j : floor(j / l) = floor(i / l)}                  the query's own block
    A(2) = {j : j mod l in {l - c, ..., l - 1}}               every block's last c "summary" columns

and each head attends to A(1) ∪ A(2) (the paper's "merged head"; one pattern for all heads, as
LRA's code does), non-causal as an encoder uses it:

    y_i = W_O concat_h sum_{j in A(1) ∪ A(2), j real} softmax_j(q_i . k_j / sqrt(d)) v_j

Block-sparse: the sequence is padded inside to a multiple of l (padding masked) and cut into
n = L / l blocks; the queries of each block (l of them) score [their own block's l keys ||
the n * s gathered summary keys] with one softmax, where the summary keys of the own block are
masked out of the second part (already in the first), so every allowed key counts once. The
largest tensor is the (B, h, n, l, l + n * s) score block: h * L * (l + s * L / l) elements,
O(L^2 * s / l) — a constant factor (s / l = 1/5 at LRA's l = 50, c = 10) below dense attention,
not linear in L (the pattern itself has that many entries).

`lra_quirks=True` is the mask LRA's code builds (reference/lra_baselines.md §3.8): s = c + 1 summary
columns {0} ∪ {l - c, ..., l - 1} per block (LRA adds the "j mod l = 0" column), the whole pattern
AND-ed with causal j <= i (own block lower-triangular, summary columns of earlier blocks only).
Computed through the same block path (LRA runs it as a dense masked O(L^2) softmax; the values are
the same). Our pipeline has no CLS token, so LRA's open CLS row and column do not arise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections, pad_to_multiple


def summary_offsets(block_size: int, num_summary_columns: int, lra_quirks: bool) -> list[int]:
    """The in-block offsets j mod l of the summary columns: {l - c, ..., l - 1} (+ {0}, LRA)."""
    offsets = set(range(block_size - num_summary_columns, block_size))
    if lra_quirks:
        offsets.add(0)
    return sorted(offsets)


class FixedSparseAttention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
        *,
        block_size: int = 50,
        num_summary_columns: int = 10,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f"model.block_size={block_size}: expected >= 1")
        if not 1 <= num_summary_columns <= block_size:
            raise ValueError(
                f"model.num_summary_columns={num_summary_columns}: expected 1 <= c <= "
                f"model.block_size={block_size}"
            )
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.attention_dropout = attention_dropout_prob
        self.block_size = block_size
        self.num_summary_columns = num_summary_columns
        self.lra_quirks = lra_quirks
        offsets = summary_offsets(block_size, num_summary_columns, lra_quirks)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)  # (s,)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        l = self.block_size  # the paper's symbol
        x, keep, length = pad_to_multiple(x, mask.to(torch.bool), l)
        q, k, v = self.proj.queries(x), self.proj.keys(x), self.proj.values(x)  # (B, h, L', d)
        b, h, padded, d = q.shape
        n, s = padded // l, self.offsets.numel()
        qb = q.view(b, h, n, l, d) * d**-0.5  # (B, h, n, l, d)
        kb, vb = k.view(b, h, n, l, d), v.view(b, h, n, l, d)
        keep_b = keep.view(b, n, l)
        ks = kb[:, :, :, self.offsets].reshape(b, h, n * s, d)  # summary keys (B, h, n*s, d)
        vs = vb[:, :, :, self.offsets].reshape(b, h, n * s, d)
        keep_s = keep_b[:, :, self.offsets].reshape(b, n * s)

        # which keys each query block may see
        local_ok = keep_b[:, None, :, None, :]  # (B, 1, n, 1, l)
        blocks = torch.arange(n, device=x.device)
        key_block = blocks.repeat_interleave(s)  # block of each summary key (n*s,)
        if self.lra_quirks:  # causal: own block j <= i; summary columns of earlier blocks only
            tril = torch.ones(l, l, dtype=torch.bool, device=x.device).tril()
            local_ok = local_ok & tril  # (B, 1, n, l, l)
            other = key_block[None, :] < blocks[:, None]  # (n, n*s)
        else:  # own block's summary keys are in the local part already: count them once
            other = key_block[None, :] != blocks[:, None]
        summary_ok = keep_s[:, None, None, None, :] & other[None, None, :, None, :]

        local = torch.matmul(qb, kb.transpose(-1, -2))  # (B, h, n, l, l)
        summary = torch.einsum("bhnid,bhjd->bhnij", qb, ks)  # (B, h, n, l, n*s)
        neg = torch.finfo(local.dtype).min  # finite: an all-masked (padded) row stays finite
        local, summary = local.masked_fill(~local_ok, neg), summary.masked_fill(~summary_ok, neg)
        probs = torch.cat([local, summary], dim=-1).softmax(dim=-1)  # (B, h, n, l, l + n*s)
        probs = F.dropout(probs, self.attention_dropout, self.training)
        y = torch.matmul(probs[..., :l], vb) + torch.einsum(
            "bhnij,bhjd->bhnid", probs[..., l:], vs
        )  # (B, h, n, l, d)
        return self.proj.output(y.reshape(b, h, padded, d)[:, :, :length])
