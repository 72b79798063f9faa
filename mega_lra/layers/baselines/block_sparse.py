"""BigBird's block-sparse attention, ITC variant (Zaheer et al., 2020, "Big Bird: Transformers
for Longer Sequences"; LRA's `models/bigbird/bigbird_attention.py`), computed in blocks:
O(L * (5 + r) * b * d), never L x L.

The sequence (padded inside to n blocks of b tokens) is split into query and key blocks
0 .. n-1. With Q, K, V = x W_Q, x W_K, x W_V (bias-free, D -> h * d) and per head:

- query blocks 0 and n-1 (the global blocks) attend to every key;
- query block i in 1 .. n-2 attends to key blocks {0, i-1, i, i+1, n-1} (the globals and the
  window; rows 1 and n-2 have 4 distinct blocks) plus r random blocks R[h, i-1, :], with one
  softmax over all the gathered keys: y_i = softmax(q_i K_S^T / sqrt(d) + M) V_S;
- padded keys get M = -inf (a finite minimum, so a row with no real key stays finite).

Symbols -> names: b = `block_size`, r = `num_random_blocks`, R = `random_blocks(n)` (h, n-2, r).
R is drawn per head and per row, without the row's window and global blocks and, as in the
BigBird authors' code and LRA (`last_idx = 1024`), only from the blocks lying wholly in the first
`random_blocks_from_first` tokens (null: anywhere). It is fixed per layer for the whole run (train
and eval alike, as LRA's `connectivity_seed`): a torch generator seeded by the layer's
`connectivity_seed` (drawn from the global RNG at construction, kept in the state dict) draws it
once per block count n.

The pattern is laid on the task's `max_length` (rounded up to whole blocks): every sequence is
padded inside to it, as LRA pads every input to the task length, so which block is the last
global one and the random draws depend on the task, never on how long the batch's longest row is
(the suite pads batches to their longest row); extra padding never changes a real token's output.
With `max_length` null the pattern is laid on the input's length rounded up to whole blocks.
`extra_padding_block: true` pads as LRA's code does, b - L % b tokens: a whole extra (all-padding)
block when L is a multiple of b (1024 -> 1088), which then holds the last global block.

Sequences with n <= r + 5 blocks use full attention (a middle row would attend to nearly all
blocks anyway; defaults: L <= 512). Attention dropout (on the softmax weights) is applied when
`attention_dropout_prob > 0`; LRA's and the authors' block-sparse paths have none.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections, pad_to_multiple

# key-block slots of a middle row i: the globals and the window, then the r random blocks
_FIXED_SLOTS = 5  # 0, i-1, i, i+1, n-1


class BlockSparseAttention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
        *,
        block_size: int = 64,
        num_random_blocks: int = 3,
        random_blocks_from_first: int | None = 1024,
        extra_padding_block: bool = False,
    ) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f"model.block_size={block_size}: expected >= 1")
        if num_random_blocks < 0:
            raise ValueError(f"model.num_random_blocks={num_random_blocks}: expected >= 0")
        if random_blocks_from_first is not None and (
            random_blocks_from_first // block_size < num_random_blocks + 4
        ):
            raise ValueError(
                f"model.random_blocks_from_first={random_blocks_from_first} holds "
                f"{random_blocks_from_first // block_size} blocks of {block_size}: expected at "
                f"least num_random_blocks + 4 = {num_random_blocks + 4} (or null: no limit)"
            )
        if not 0.0 <= attention_dropout_prob < 1.0:
            raise ValueError(
                f"model.attention_dropout_prob={attention_dropout_prob}: expected in [0, 1)"
            )
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.num_heads = num_attention_heads
        self.block_size = block_size
        self.num_random_blocks = num_random_blocks
        self.random_blocks_from_first = random_blocks_from_first
        self.attention_dropout = attention_dropout_prob
        self.max_length = max_length
        self.extra_padding_block = extra_padding_block
        # the layer's connectivity seed: fixed for the run, saved with the weights
        seed = torch.randint(0, 2**62, (), dtype=torch.int64)
        self.register_buffer("connectivity_seed", seed)  # read when a draw is made, not per call
        self._random: dict[int, torch.Tensor] = {}  # n -> R (h, n-2, r), CPU
        self._layout: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.register_load_state_dict_post_hook(_reseed)

    # -- the pattern -------------------------------------------------------------------------

    def layout_length(self, length: int) -> int:
        """The padded length the pattern is laid on: `max_length` (the task's, as LRA pads every
        sequence to it) or else `length`, rounded up to whole blocks; `extra_padding_block`: LRA's
        b - L % b padded tokens, a whole extra block when L is already a multiple of b."""
        length = max(length, self.max_length or 0)
        if self.extra_padding_block:
            return (length // self.block_size + 1) * self.block_size
        return -(-length // self.block_size) * self.block_size

    def is_sparse(self, n_blocks: int) -> bool:
        """Whether n blocks use the block-sparse pattern (else full attention)."""
        return n_blocks > self.num_random_blocks + _FIXED_SLOTS

    def random_candidates(self, n_blocks: int, row: int) -> list[int]:
        """Key blocks middle query block `row` (1 .. n-2) may draw its random blocks from: not
        the globals 0 and n-1, not the window row-1 .. row+1, and only blocks lying wholly in
        the first `random_blocks_from_first` tokens."""
        end = n_blocks - 1
        if self.random_blocks_from_first is not None:
            end = min(end, self.random_blocks_from_first // self.block_size)
        return [j for j in range(1, end) if abs(j - row) > 1]

    def random_blocks(self, n_blocks: int) -> torch.Tensor:
        """R (h, n-2, r) int64: the random key blocks of middle query blocks 1 .. n-2, per head;
        drawn once per n from the layer's seed, then fixed."""
        if not self.is_sparse(n_blocks):
            raise ValueError(
                f"{n_blocks} blocks use full attention (block-sparse needs > "
                f"num_random_blocks + {_FIXED_SLOTS} = {self.num_random_blocks + _FIXED_SLOTS})"
            )
        if n_blocks not in self._random:
            gen = torch.Generator().manual_seed(int(self.connectivity_seed))
            rows = []
            for row in range(1, n_blocks - 1):
                cands = torch.tensor(self.random_candidates(n_blocks, row), dtype=torch.int64)
                order = torch.rand(self.num_heads, len(cands), generator=gen).argsort(dim=1)
                rows.append(cands[order[:, : self.num_random_blocks]])  # (h, r)
            self._random[n_blocks] = torch.stack(rows, dim=1)  # (h, n-2, r)
        return self._random[n_blocks]

    def pin_random_blocks(self, n_blocks: int, random_blocks: torch.Tensor) -> None:
        """Use the given R (h, n-2, r) for n blocks instead of the drawn one (e.g. to align
        with another implementation's draw). Not saved in the state dict."""
        shape = (self.num_heads, n_blocks - 2, self.num_random_blocks)
        if tuple(random_blocks.shape) != shape:
            raise ValueError(f"random_blocks shape {tuple(random_blocks.shape)}: expected {shape}")
        if random_blocks.numel() and (random_blocks.min() < 0 or random_blocks.max() >= n_blocks):
            raise ValueError(f"random_blocks outside 0 .. {n_blocks - 1}")
        self._random[n_blocks] = random_blocks.to(torch.int64).cpu()
        self._layout = {k: v for k, v in self._layout.items() if k[0] != n_blocks}

    def _key_blocks(self, n_blocks: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Key-block index (h, n-2, 5+r) of each middle row and whether each slot counts
        (rows 1 and n-2 repeat a global block in their window: that slot is off)."""
        key = (n_blocks, device)
        if key not in self._layout:
            rows = torch.arange(1, n_blocks - 1)[:, None]  # (n-2, 1)
            fixed = torch.cat(
                [rows * 0, rows - 1, rows, rows + 1, rows * 0 + n_blocks - 1], dim=1
            )  # (n-2, 5)
            fixed = fixed.expand(self.num_heads, -1, -1)
            index = torch.cat([fixed, self.random_blocks(n_blocks)], dim=2)  # (h, n-2, 5+r)
            valid = torch.ones_like(index, dtype=torch.bool)
            valid[:, 0, 1] = False  # row 1: its block i-1 is the global block 0
            valid[:, -1, 3] = False  # row n-2: its block i+1 is the global block n-1
            self._layout[key] = (index.to(device), valid.to(device))
        return self._layout[key]

    # -- attention ---------------------------------------------------------------------------

    def _softmax(self, scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        return F.dropout(probs, self.attention_dropout, self.training)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        length = x.size(1)
        x, keep, _ = pad_to_multiple(x, mask.to(torch.bool), self.layout_length(length))
        n, b = x.size(1) // self.block_size, self.block_size
        q = self.proj.queries(x) / math.sqrt(self.proj.head_size)  # (B, h, Lp, d)
        k, v = self.proj.keys(x), self.proj.values(x)
        if not self.is_sparse(n):
            probs = self._softmax(q @ k.transpose(-1, -2), keep[:, None, None, :])
            return self.proj.output((probs @ v)[:, :, :length])
        batch, heads, _, d = q.shape
        # global query blocks 0 and n-1 against all keys: (B, h, 2b, Lp)
        q_global = torch.cat([q[:, :, :b], q[:, :, -b:]], dim=2)
        probs = self._softmax(q_global @ k.transpose(-1, -2), keep[:, None, None, :])
        y_global = (probs @ v).view(batch, heads, 2, b, d)
        # middle query blocks 1 .. n-2 against their gathered key blocks
        index, valid = self._key_blocks(n, x.device)  # (h, n-2, S)
        head = torch.arange(heads, device=x.device)[:, None, None]
        q_mid = q.view(batch, heads, n, b, d)[:, :, 1:-1]  # (B, h, n-2, b, d)
        k_sel = k.view(batch, heads, n, b, d)[:, head, index]  # (B, h, n-2, S, b, d)
        v_sel = v.view(batch, heads, n, b, d)[:, head, index]
        keep_sel = keep.view(batch, n, b)[:, index] & valid[..., None]  # (B, h, n-2, S, b)
        scores = torch.einsum("bhnqd,bhnskd->bhnqsk", q_mid, k_sel)  # (B, h, n-2, b, S, b)
        slots = scores.size(4) * b
        probs = self._softmax(
            scores.reshape(batch, heads, n - 2, b, slots),
            keep_sel.reshape(batch, heads, n - 2, 1, slots),
        )
        y_mid = torch.einsum(
            "bhnqj,bhnjd->bhnqd", probs, v_sel.reshape(batch, heads, n - 2, slots, d)
        )  # (B, h, n-2, b, d)
        y = torch.cat([y_global[:, :, :1], y_mid, y_global[:, :, 1:]], dim=2)  # (B, h, n, b, d)
        return self.proj.output(y.reshape(batch, heads, n * b, d)[:, :, :length])


def _reseed(module: BlockSparseAttention, _incompatible) -> None:
    """After load_state_dict: forget the draws made from the previous connectivity seed."""
    module._random.clear()
    module._layout.clear()
