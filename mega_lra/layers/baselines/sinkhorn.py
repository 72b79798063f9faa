"""Sparse Sinkhorn attention (Tay et al. 2020, "Sparse Sinkhorn Attention"; LRA's "Sinkhorn
Transformer" row; reference/lra_baselines.md §3.11): block-sorted local attention, O(L b d).

The paper's method (the default, non-causal, no SortCut). The length is padded inside to
n_B blocks of b = `block_size` tokens (padding masked) and cut back.
- Block summaries (the paper's psi_P, sum pooling): s_j = sum of the real keys of block j, per
  head (B, h, n_B, d).
- Sort net (the paper's P(.), a two-layer ReLU MLP with non-negative output): R_j = ReLU(W_B
  ReLU(W_P s_j + b_P) + b_B), d -> d -> `max_num_blocks` (null: enough blocks for the task's
  max_length), shared by the heads, its first n_B columns kept: R (B, h, n_B, n_B).
- Sinkhorn balancing (the paper's S(R)): in the log domain, (R + eps) / tau with Gumbel noise
  eps in training only (tau = `temperature`), then `sinkhorn_iterations` rounds of row then
  column normalisation; P = exp(.) is (nearly) doubly stochastic. Blocks that are all padding are
  fixed points (they map to themselves and nothing else), so extra padding changes nothing.
- Sorted blocks: K_S[i] = sum_j P_ij K[j], V_S likewise (padded keys zeroed first).
- Attention: each query of block i attends, in one softmax with scale 1/sqrt(d), to the
  concatenation [K_S[i], K[i]] of its sorted block and its own (local) block, 2b keys.

`lra_quirks=True` computes LRA's `sinkhorn_attention.py` as coded:
- no length padding: L must be a multiple of b (the backbone pads lengths to it);
- the strided groups of LRA's Local (token t = s n + g is member s of group g, n = L / b), with
  the contiguous-chunk padding mask (local.py's docstring);
- the sort net is one bias-free Dense d -> `max_num_blocks` (LRA: 25) and a softmax (not Sinkhorn)
  whose result enters only through einsum('bskhd,bnhl->bsnhd', K, P), which sums over the
  permutation's last axis: sum_l P = 1, so it is a no-op (zero gradient to the sort net). What
  remains: every query also attends, in a second softmax, to the b chunk sums
  C_s = sum of keys s n ... s n + n - 1 (values likewise); the chunk (s, s') pair is allowed iff
  some contiguous chunk k has m[k b + s] and m[k b + s'];
- the output is the sum of the two separately normalised attentions.
"""

from __future__ import annotations

import torch
from torch import nn

from mega_lra.layers.baselines.local import masked_block_attention
from mega_lra.layers.baselines.projections import HeadProjections, pad_to_multiple, xavier_linear

LRA_MAX_NUM_BLOCKS = 25  # LRA's SinkhornAttention default
_FAR = -1e9  # log-weight of a block pair that must not mix (exp underflows to exactly 0)


def sinkhorn(log_alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sinkhorn balancing in the log domain: `iterations` rounds of row then column
    normalisation of (..., n, n); returns exp(.)."""
    for _ in range(iterations):
        log_alpha = log_alpha - log_alpha.logsumexp(-1, keepdim=True)
        log_alpha = log_alpha - log_alpha.logsumexp(-2, keepdim=True)
    return log_alpha.exp()


class SinkhornAttention(nn.Module):
    """x (B, L, D), mask (B, L) -> (B, L, D): attention over the own block and a sorted block."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
        *,
        block_size: int = 50,
        sinkhorn_iterations: int = 5,
        temperature: float = 0.75,
        max_num_blocks: int | None = None,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f"model.block_size={block_size}: expected a positive integer")
        if sinkhorn_iterations < 0:
            raise ValueError(f"model.sinkhorn_iterations={sinkhorn_iterations}: expected >= 0")
        if not temperature > 0:
            raise ValueError(f"model.temperature={temperature}: expected > 0")
        if max_num_blocks is None:
            if lra_quirks:
                max_num_blocks = LRA_MAX_NUM_BLOCKS
            elif max_length is None:
                raise ValueError(
                    "model.max_num_blocks=null needs the task's max_length (the sort net has one "
                    "output per block); set model.max_num_blocks"
                )
            else:
                max_num_blocks = -(-max_length // block_size)
        if max_num_blocks < 1:
            raise ValueError(f"model.max_num_blocks={max_num_blocks}: expected >= 1")
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        d = self.proj.head_size
        self.block_size = block_size
        self.sinkhorn_iterations = sinkhorn_iterations
        self.temperature = temperature
        self.max_num_blocks = max_num_blocks
        self.lra_quirks = lra_quirks
        self.attention_dropout = attention_dropout_prob
        if lra_quirks:  # LRA: one bias-free Dense d -> max_num_blocks
            self.sort_net = xavier_linear(d, max_num_blocks)
        else:  # the paper's P(.): ReLU(W_B ReLU(W_P s + b_P) + b_B)
            self.sort_net = nn.Sequential(
                nn.Linear(d, d), nn.ReLU(), nn.Linear(d, max_num_blocks), nn.ReLU()
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        if self.lra_quirks:
            return self._as_coded(x, mask.to(torch.bool))
        bs = self.block_size
        x, keep, length = pad_to_multiple(x, mask.to(torch.bool), bs)
        b, padded = keep.shape
        n = padded // bs
        if n > self.max_num_blocks:
            raise ValueError(
                f"{length} tokens make {n} blocks of model.block_size={bs}, more than "
                f"model.max_num_blocks={self.max_num_blocks}"
            )
        blocks = keep.view(b, 1, n, bs, 1)  # real tokens, (B, 1, n, b, 1)
        q, k, v = (
            t.reshape(b, -1, n, bs, t.size(-1))  # (B, h, L', d) -> (B, h, n, b, d)
            for t in (self.proj.queries(x), self.proj.keys(x), self.proj.values(x))
        )
        k, v = k * blocks, v * blocks  # padded keys and values never mix into a sorted block

        # soft block permutation P (B, h, n, n): P[i, j] = weight of block j in sorted block i
        logits = self.sort_net(k.sum(3))[..., :n]  # block summaries (B, h, n, d) -> (B, h, n, n)
        if self.training:  # Gumbel-Sinkhorn: Gumbel noise in training only
            uniform = torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)
            logits = logits - torch.log(-torch.log(uniform))
        logits = logits / self.temperature
        real = keep.view(b, n, bs).any(-1)  # (B, n) blocks with a real token
        pair = real[:, None, :, None] & real[:, None, None, :]  # (B, 1, n, n)
        alone = torch.eye(n, dtype=torch.bool, device=x.device) & ~real[:, None, :, None]
        logits = torch.where(pair, logits, torch.where(alone, 0.0, _FAR))
        perm = sinkhorn(logits, self.sinkhorn_iterations)  # (B, h, n, n)

        sorted_k = torch.einsum("bhij,bhjsd->bhisd", perm, k)  # (B, h, n, b, d)
        sorted_v = torch.einsum("bhij,bhjsd->bhisd", perm, v)
        # a sorted position holds a key iff some block mixed into it is real there
        sorted_real = torch.einsum("bhij,bjs->bhis", perm, keep.view(b, n, bs).to(perm.dtype)) > 0
        allowed = torch.cat([sorted_real, keep.view(b, 1, n, bs).expand_as(sorted_real)], -1)
        y = masked_block_attention(
            q,
            torch.cat([sorted_k, k], -2),  # (B, h, n, 2b, d)
            torch.cat([sorted_v, v], -2),
            allowed.unsqueeze(-2),  # (B, h, n, 1, 2b)
            self.attention_dropout,
            self.training,
        )
        return self.proj.output(y.reshape(b, -1, padded, y.size(-1)))[:, :length]

    def _as_coded(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """LRA as coded (module docstring): strided local attention + attention over chunk sums."""
        bs = self.block_size
        b, length = keep.shape
        if length % bs:
            raise ValueError(
                f"lra_quirks: the length {length} is not a multiple of model.block_size={bs} "
                "(LRA's Sinkhorn attention does not pad)"
            )
        n = length // bs

        def groups(t: torch.Tensor) -> torch.Tensor:
            # (B, h, L, d) -> (B, h, b, n, d): token s n + g at [s, g] -> (B, h, n, b, d)
            return t.reshape(b, t.size(1), bs, n, t.size(-1)).transpose(2, 3)

        q, k, v = (
            groups(t) for t in (self.proj.queries(x), self.proj.keys(x), self.proj.values(x))
        )
        chunks = keep.view(b, n, bs)  # the mask as contiguous chunks: chunks[g, s] = m[g b + s]
        pairs = chunks[:, :, :, None] & chunks[:, :, None, :]  # (B, n, b, b)
        local = masked_block_attention(
            q, k, v, pairs.unsqueeze(1), self.attention_dropout, self.training
        )

        # the sort net's softmax enters only through its row sums (= 1): LRA's no-op einsum
        # strided group sums (B, h, n, d) -> (B, h, n, min(n, 25)), LRA's `sort_out[..., :n]`
        perm = self.sort_net(k.sum(3))[..., :n].softmax(-1)
        scale = perm.sum(-1)[..., None, None]  # (B, h, n, 1, 1), 1 up to rounding
        chunk_k = k.sum(2)[:, :, None] * scale  # chunk sums C_s (B, h, b, d) -> (B, h, n, b, d)
        chunk_v = v.sum(2)[:, :, None] * scale
        chunk_allowed = pairs.any(1)[:, None, None]  # (B, 1, 1, b, b)
        sorted_y = masked_block_attention(
            q, chunk_k, chunk_v, chunk_allowed, self.attention_dropout, self.training
        )
        y = (local + sorted_y).transpose(2, 3).reshape(b, -1, length, local.size(-1))
        return self.proj.output(y)
