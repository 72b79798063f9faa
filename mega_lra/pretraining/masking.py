"""The corruption of self-pretraining as pure functions of a collated batch.

Which positions are masked: every real position independently with probability p (Bernoulli,
so the masked count is Binomial, as NFS draws it); padding is never chosen. The draw u in [0, 1)
of a position is a hash of (key..., row, position), not a random-number generator's state:

- training: key = (run seed, epoch), so every epoch draws fresh masks, a fixed seed reproduces
  them, and a run resumed mid-epoch, a DDP run or a run with loader workers sees the same masks;
- val / test: key = (`spt.eval_mask_seed`, split), so the monitored metric is measured on the
  same masks at every validation (NFS redraws them at random; a deliberate deviation).

With `spt.span_length` s (optional; NFS's `span_masking`, unused by the paper's configs), a
row of real length L instead gets n = int(L p / s) non-overlapping spans of s positions, drawn
uniformly among all such placements: n of the L - n (s - 1) "slots" are chosen (the n smallest
draws of the same counter-based hash, salted), and the k-th chosen slot j (in order) starts the
span at j + k (s - 1). Only real positions are counted and covered (padding never is), and a row
with L p < s gets no span. NFS samples starts one after another from the starts that do not
overlap the spans so far (which can run out of room and fail); the placements here are uniform
and always fit.

Rows are the split's row indices (`row_index` in the batch); the two documents of a Retrieval
pair are rows 2r and 2r + 1 (each an independent sequence).

Corrupted inputs and targets (`IGNORE` = -100 where a position is not scored):

- tokens, masked: chosen ids -> `mask_id` (the id one past the task's vocabulary, reserved for
  this and never produced by the tokenizers); target = the original id at chosen positions;
- tokens, causal: the input unchanged; target[t] = id[t + 1], the last real position ignored;
- pixels, masked: value -> value * (1 - m) and the flag m, the two channels [x (1 - m), m] of
  NFS; target = the normalised value (L1) or the integer grey level 0..255 (CE-256);
- pixels, causal: the input unchanged; target[t] = the next value or grey level.

The hash is "lowbias32" (C. Wellons' 32-bit integer mixer) on int64 tensors, with the
multiplications split so that nothing overflows: the same bits on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100
M32 = 0xFFFFFFFF
SPLIT_SALT = {"train": 0, "val": 0x5EED_0001, "test": 0x5EED_0002}
SPAN_SALT = 0x5EED_5BA7  # appended to the key of span draws


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) without int64 overflow (c split in 16-bit halves)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65536) & M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijection of [0, 2^32) with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniforms(key: Sequence[int], rows: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) row indices -> (B, length) float64 draws in [0, 1), a function of (key, row, pos)."""
    h = torch.zeros((), dtype=torch.int64, device=rows.device)
    for part in key:
        h = mix32(h ^ (int(part) & M32))
    h = mix32(h ^ (rows.to(torch.int64) & M32)).unsqueeze(-1)  # (B, 1)
    pos = torch.arange(length, device=rows.device, dtype=torch.int64)
    return mix32(mix32(h ^ pos)).to(torch.float64) / 2.0**32  # (B, L)


def choose_positions(
    real: torch.Tensor, rate: float, key: Sequence[int], rows: torch.Tensor
) -> torch.Tensor:
    """(B, L) bool of masked positions: real positions whose draw is below `rate`."""
    return (uniforms(key, rows, real.size(-1)) < rate) & real.to(torch.bool)


def choose_spans(
    real: torch.Tensor, rate: float, span: int, key: Sequence[int], rows: torch.Tensor
) -> torch.Tensor:
    """(B, L) bool of masked positions: int(n_real * rate / span) non-overlapping spans of
    `span` real positions per row, placed uniformly at random."""
    real = real.to(torch.bool)
    width = real.size(-1)
    n_real = real.sum(dim=-1, dtype=torch.int64)  # (B,)
    count = torch.floor(n_real.to(torch.float64) * float(rate) / span).to(torch.int64)  # (B,)
    slots = n_real - count * (span - 1)  # (B,) >= count, as count * span <= n_real
    draws = uniforms((*key, SPAN_SALT), rows, width)  # distinct within a row
    pos = torch.arange(width, device=real.device)
    draws = draws.masked_fill(pos >= slots.unsqueeze(-1), 2.0)  # never among the smallest
    rank = draws.argsort(dim=-1).argsort(dim=-1)  # (B, L): 0 for the smallest draw
    picked = rank < count.unsqueeze(-1)  # (B, L): the chosen slots
    before = picked.cumsum(dim=-1) - picked.to(torch.int64)  # chosen slots before each
    start = torch.where(picked, pos + before * (span - 1), width + span)  # in real-rank space
    edges = torch.zeros(real.size(0), width + 2 * span + 1, dtype=torch.int64, device=real.device)
    ones = picked.to(torch.int64)
    edges.scatter_add_(1, start, ones)
    edges.scatter_add_(1, start + span, -ones)
    covered = edges.cumsum(dim=-1)[:, :width] > 0  # (B, L) over real ranks 0..n_real - 1
    real_rank = (real.cumsum(dim=-1) - 1).clamp_min(0)  # the k-th real position has rank k
    return covered.gather(1, real_rank) & real


def mask_tokens(
    ids: torch.Tensor, chosen: torch.Tensor, mask_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted ids, targets): chosen -> mask_id / the original id, else kept / IGNORE."""
    return ids.masked_fill(chosen, mask_id), ids.masked_fill(~chosen, IGNORE)


def next_targets(
    values: torch.Tensor, real: torch.Tensor, fill
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, scored): target[t] = values[t + 1] where t and t + 1 are real, else `fill`
    (the last real position and padding are not scored)."""
    real = real.to(torch.bool)
    shifted = torch.cat([values[:, 1:], torch.full_like(values[:, :1], fill)], dim=1)
    scored = torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], dim=1) & real
    return shifted.masked_fill(~scored, fill), scored


def grey_levels(inputs: torch.Tensor, normalization: dict) -> torch.Tensor:
    """The integer grey levels 0..255 of collated pixels `(level * scale - mean) / std`."""
    scale, mean, std = (float(normalization[k]) for k in ("scale", "mean", "std"))
    level = (inputs.to(torch.float64) * std + mean) / scale
    return level.round().clamp(0, 255).to(torch.int64)
