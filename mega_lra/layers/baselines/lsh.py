"""Reformer's LSH self-attention (Kitaev, Kaiser & Levskaya, ICLR 2020, §2), in sorted chunks.

Symbols -> names: the shared query/key projection W_QK = `proj.query` (q_i = x_i W_QK, k_i =
q_i / ||q_i||), W_V = `proj.value`, W_O = `proj.out`; d = `head_size`; n_rounds = `num_hashes`;
n_buckets = `num_buckets`; the chunk length m = `bucket_size`; the random rotation R (one per
head and round, d x n_buckets/2) = `rotations`.

    h(x)      = argmax([x R ; -x R])                              angular LSH, per round r
    sort      the tokens by (h(q_i), i) within each round; cut the sorted order into chunks of m
    P_i^(r)   = the chunk of i and the chunk before it (the first chunk looks back at the last)
    o_i^(r)   = sum_{j in P_i^(r)} exp(s_ij - log N_ij - z_i^(r)) v_j,  s_ij = q_i . k_j / sqrt(d)
    o_i       = sum_r softmax_r(z_i^(r)) o_i^(r)                  z_i^(r) = logsumexp over P_i^(r)
    y_i       = W_O concat_h o_i

s_ii is set to -1e5 (a token attends to itself only when nothing else is in reach), padded keys
are masked, and N_ij (the number of rounds whose P_i^(r) holds j) de-duplicates keys met in
several rounds, so that o_i is exactly the softmax over the union of the P_i^(r) (paper §2,
"multi-round LSH attention"). Padding goes into an extra last bucket, and the first chunk of a
round looks back at the round's last chunk that holds a real token, so real tokens never see how
much padding follows them. Cost: O(n_rounds * L * 2m * d); no L x L tensor is ever built.

Sizes: `bucket_size` fixes m and n_buckets = 2 ceil(L / m) (the paper's m = 2L / n_buckets),
with L the task's `max_length` when given (else the input's length); above 2m buckets the hash is
factorised into two angular hashes (b_1 b_2 >= n_buckets; trax's and transformers' device), so
that hashing stays O(L sqrt(L / m)) instead of O(L^2 / m). `num_buckets` set instead
fixes n_buckets and makes m = ceil(L / n_buckets), LRA's chunking: n_buckets chunks per round,
cost O(2 L^2 / n_buckets) (L^2 / 5 at LRA's 10 buckets).

Rotations: drawn afresh from the global generator at every training forward (the paper), fixed in
evaluation (a per-layer seed drawn at construction and saved with the weights), or fixed always
when `hash_seed` is set.

`lra_quirks=True` computes what LRA's `reformer_attention.py` computes instead: logits
q_i . q_j * sqrt(d) (a multiplication), keys not normalised, no self or padding mask, no
attention dropout, one rotation from seed 0 shared by every head and layer and never redrawn,
n_buckets = `num_buckets` or 10, the input right-padded (with zeros, unmasked) by
n_buckets - L % n_buckets, the rounds sorted together into n_rounds * n_buckets chunks of
L_pad / n_buckets that look back across round boundaries, rounds combined without
de-duplication, d = D / h whatever `qkv_size` says, and no output projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections

MASK_VALUE = -1e9  # padded keys, absent look-back: weight exactly 0, and never NaN
SELF_VALUE = -1e5  # the paper's self-mask value (also trax's and transformers')
LRA_NUM_BUCKETS = 10  # LRA's default, never overridden by its configs


def lsh_buckets(
    vectors: torch.Tensor, rotations: torch.Tensor, factors: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Angular LSH: (B, h, L, d) vectors, (h, d, R, sum(factors)/2) rotations -> (B, h, R, L).

    One factor (default: 2 * rotations.shape[-1] buckets): argmax([xR ; -xR]). Several factors
    b_1, b_2, ...: an independent angular hash per factor on its own slice of R, combined as
    h_1 + b_1 h_2 + ... (prod b_i buckets for sum b_i / 2 directions, as trax and transformers
    factorise large bucket counts)."""
    rotated = torch.einsum("bhld,hdrn->bhrln", vectors, rotations)  # (B, h, R, L, sum b_i/2)
    factors = factors or (2 * rotations.shape[-1],)
    buckets, start, stride = None, 0, 1
    for factor in factors:
        part = rotated[..., start : start + factor // 2]
        index = torch.cat([part, -part], dim=-1).argmax(dim=-1)
        buckets = index if buckets is None else buckets + stride * index
        start, stride = start + factor // 2, stride * factor
    return buckets


def bucket_factors(n_buckets: int, chunk: int) -> tuple[int, ...]:
    """Hashing into n buckets costs L * n / 2 dot products; above n = 2m (the logits' 2m per
    token) the count is split into two even factors b_1 b_2 >= n, so that it costs
    L * (b_1 + b_2) / 2 = O(L sqrt(L / m)) and never dominates."""
    if n_buckets <= 2 * chunk:
        return (n_buckets,)
    first = 2 * math.ceil(math.sqrt(n_buckets) / 2)
    return (first, 2 * math.ceil(n_buckets / first / 2))


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, h, L, ...) at index (B, h, N) -> (B, h, N, ...)."""
    shape = index.shape + x.shape[3:]
    flat = index.reshape(*index.shape, *([1] * (x.dim() - 3))).expand(shape)
    return torch.gather(x, 2, flat)


def _gather_chunks(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, h, nc, ...) at chunk index (B, nc) -> (B, h, nc, ...)."""
    b, h = x.shape[:2]
    shape = (b, h) + x.shape[2:]
    flat = index.reshape(b, 1, -1, *([1] * (x.dim() - 3))).expand(shape)
    return torch.gather(x, 2, flat)


def _look_back(
    mask: torch.Tensor | None, rounds: int, length: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunk each chunk looks back at, (B, nc), and whether that look-back is real (B, nc).

    mask None (LRA): one wrap-around over all rounds' nc = rounds * length / chunk chunks.
    Otherwise per round: chunk 0 looks back at the round's last chunk holding a real token, and a
    round with a single real chunk has no look-back (it would only repeat its own keys)."""
    per_round = length // chunk
    local = torch.arange(per_round, device=mask.device if mask is not None else None)
    if mask is None:
        total = rounds * per_round
        prev = (torch.arange(total) - 1) % total
        return prev[None], (prev != torch.arange(total))[None]
    real_chunks = (mask.sum(-1).clamp(min=1) + chunk - 1) // chunk  # (B,)
    prev_local = torch.where(local > 0, local - 1, real_chunks[:, None] - 1)  # (B, nc_r)
    present = prev_local != local
    prev = torch.cat([prev_local + r * per_round for r in range(rounds)], dim=1)
    return prev, present.repeat(1, rounds)


def lsh_attend(
    qk: torch.Tensor,
    v: torch.Tensor,
    rotations: torch.Tensor,
    chunk: int,
    scale: float,
    mask: torch.Tensor | None,
    *,
    lra: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    factors: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """LSH attention of shared-QK heads: qk, v (B, h, L, d) with L a multiple of `chunk`,
    rotations (h, d, R, n_buckets/2) -> (B, h, L, d); `factors` as in `lsh_buckets`.

    `mask` (B, L) bool (True = real) masks padding (the paper); None masks nothing. `lra=True`
    is LRA's as-coded variant (raw keys, no self mask, rounds sorted together, no de-dup)."""
    b, h, length, d = qk.shape
    factors = factors or (2 * rotations.shape[3],)
    rounds, n_buckets = rotations.shape[2], math.prod(factors)
    if length % chunk:
        raise ValueError(f"length {length} is not a multiple of the chunk length {chunk}")
    n_chunks = rounds * length // chunk

    buckets = lsh_buckets(qk, rotations, factors)  # (B, h, R, L)
    if mask is not None:  # padding: an extra last bucket, sorted after every real token
        buckets = buckets.masked_fill(~mask[:, None, None, :], n_buckets)
    rounds_offset = torch.arange(rounds, device=qk.device)[:, None] * (n_buckets + 1)
    positions = torch.arange(length, device=qk.device)
    sort_key = ((buckets + rounds_offset) * length + positions).flatten(2)  # (B, h, R*L)
    order = sort_key.argsort(dim=-1)  # sorted slot -> copy (round * L + token)
    slot_of = order.argsort(dim=-1)  # copy -> sorted slot
    token = order % length  # (B, h, N) token in each sorted slot, N = R*L

    q = _gather_tokens(qk, token)  # (B, h, N, d)
    k = q if lra else F.normalize(q, dim=-1)
    val = _gather_tokens(v, token)
    prev, present = _look_back(mask, rounds, length, chunk)  # (B, nc), (B, nc)
    prev, present = prev.to(qk.device).expand(b, -1), present.to(qk.device).expand(b, -1)

    def windows(x: torch.Tensor) -> torch.Tensor:  # (B, h, N, ...) -> (B, h, nc, 2m, ...)
        x = x.reshape(b, h, n_chunks, chunk, *x.shape[3:])
        return torch.cat([x, _gather_chunks(x, prev)], dim=3)

    q = q.view(b, h, n_chunks, chunk, d)  # (B, h, nc, m, d)
    k_win, v_win, t_win = windows(k), windows(val), windows(token)  # (B, h, nc, 2m, ...)
    logits = torch.matmul(q, k_win.transpose(-1, -2))  # (B, h, nc, m, 2m)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) * scale

    if not lra:
        t_q = token.view(b, h, n_chunks, chunk)  # (B, h, nc, m)
        logits = logits.masked_fill(t_q[..., :, None] == t_win[..., None, :], SELF_VALUE)
        batch = torch.arange(b, device=qk.device)[:, None, None, None]
        own = torch.ones_like(present)[:, :, None].expand(b, n_chunks, chunk)
        back = present[:, :, None].expand(b, n_chunks, chunk)
        keep = mask[batch, t_win] & torch.cat([own, back], dim=2)[:, None]  # (B, h, nc, 2m)
        logits = logits.masked_fill(~keep[..., None, :], MASK_VALUE)
        if rounds > 1:
            n_ij = _duplicates(slot_of, t_q, t_win, prev, present, chunk, rounds)
            logits = logits - n_ij.to(logits.dtype).log()

    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, h, nc, m, 1)
    probs = torch.exp(logits - lse)
    if dropout and training:
        probs = F.dropout(probs, dropout, training)
    out = torch.matmul(probs.to(v.dtype), v_win)  # (B, h, nc, m, d)

    # unsort: sorted slot -> copy, then combine the rounds by their normalisers
    out = _gather_tokens(out.reshape(b, h, -1, d), slot_of).view(b, h, rounds, length, d)
    lse = _gather_tokens(lse.reshape(b, h, -1), slot_of).view(b, h, rounds, length, 1)
    weights = torch.softmax(lse, dim=2).to(out.dtype)  # (B, h, R, L, 1)
    return (weights * out).sum(dim=2)


def _duplicates(
    slot_of: torch.Tensor,
    t_q: torch.Tensor,
    t_win: torch.Tensor,
    prev: torch.Tensor,
    present: torch.Tensor,
    chunk: int,
    rounds: int,
) -> torch.Tensor:
    """N_ij: in how many rounds key j lies in query i's window, (B, h, nc, m, 2m), at least 1.

    slot_of (B, h, R*L) sorted slot of each copy; t_q (B, h, nc, m) and t_win (B, h, nc, 2m) the
    tokens of each chunk's queries and window; prev/present (B, nc) the look-back tables."""
    b, h = t_q.shape[:2]
    chunk_of = (slot_of // chunk).view(b, h, rounds, -1)  # (B, h, R, L) chunk of each copy
    heads = torch.arange(h, device=t_q.device)[None, :, None, None, None]
    batch = torch.arange(b, device=t_q.device)[:, None, None, None, None]
    r = torch.arange(rounds, device=t_q.device)
    c_q = chunk_of[batch, heads, r, t_q[..., None]].unsqueeze(-2)  # (B, h, nc, m, 1, R)
    c_k = chunk_of[batch, heads, r, t_win[..., None]].unsqueeze(-3)  # (B, h, nc, 1, 2m, R)
    batch = batch[..., None]
    member = (c_k == c_q) | (present[batch, c_q] & (c_k == prev[batch, c_q]))  # (.., 2m, R)
    return member.sum(-1).clamp(min=1)


class LSHAttention(nn.Module):
    """Multi-head LSH self-attention: x (B, L, D), mask (B, L) -> (B, L, D).

    `num_hashes` rounds; `bucket_size` = chunk length m (n_buckets auto) unless `num_buckets` is
    set (then m = ceil(L / num_buckets)); `hash_seed` fixes the rotations; `lra_quirks` is LRA's
    as-coded version (module docstring)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float,
        max_length: int | None = None,
        *,
        num_hashes: int = 1,
        bucket_size: int = 64,
        num_buckets: int | None = None,
        hash_seed: int | None = None,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__()
        if num_hashes < 1:
            raise ValueError(f"model.num_hashes={num_hashes}: expected >= 1")
        if num_buckets is None and (bucket_size is None or bucket_size < 1):
            raise ValueError(f"model.bucket_size={bucket_size}: expected >= 1")
        if num_buckets is not None and (num_buckets < 2 or num_buckets % 2):
            raise ValueError(f"model.num_buckets={num_buckets}: expected an even number >= 2")
        if not 0.0 <= attention_dropout_prob < 1.0:
            raise ValueError(
                f"model.attention_dropout_prob={attention_dropout_prob}: expected in [0, 1)"
            )
        if hash_seed is not None and hash_seed < 0:
            raise ValueError(f"model.hash_seed={hash_seed}: expected null or >= 0")
        self.proj = HeadProjections(
            hidden_size,
            num_attention_heads,
            None if lra_quirks else qkv_size,  # LRA: qkv_features = the input width
            keys=False,
            output=not lra_quirks,
        )
        self.num_heads = num_attention_heads
        self.head_size = self.proj.head_size
        self.num_hashes = num_hashes
        self.bucket_size = bucket_size
        self.num_buckets = num_buckets
        self.hash_seed = hash_seed
        self.lra_quirks = lra_quirks
        self.max_length = max_length
        self.attention_dropout = 0.0 if lra_quirks else attention_dropout_prob
        # evaluation's fixed rotations, one seed per layer, saved with the weights
        self.register_buffer("rotation_seed", torch.randint(0, 2**62, ()), persistent=True)

    def layout(self, length: int) -> tuple[int, int, int]:
        """(chunk length m, n_buckets, padded length) for an input of `length` tokens."""
        if self.lra_quirks:
            n_buckets = self.num_buckets or LRA_NUM_BUCKETS
            padded = length + n_buckets - length % n_buckets  # LRA always pads, 1..n_buckets
            return padded // n_buckets, n_buckets, padded
        ref = self.max_length or length
        if self.num_buckets is not None:
            n_buckets, chunk = self.num_buckets, -(-ref // self.num_buckets)
        else:
            chunk = self.bucket_size
            n_buckets = max(2, 2 * -(-ref // chunk))
        return chunk, n_buckets, -(-length // chunk) * chunk

    def factors(self, n_buckets: int, chunk: int) -> tuple[int, ...]:
        """The hash's bucket factors: one unless n_buckets is automatic and above 2m."""
        if self.lra_quirks or self.num_buckets is not None:
            return (n_buckets,)
        return bucket_factors(n_buckets, chunk)

    def rotations(self, n_buckets: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(h, d, R, n_buckets/2) random rotations for this forward (n_buckets: the sum of the
        factors when factorised)."""
        heads = 1 if self.lra_quirks else self.num_heads
        shape = (heads, self.head_size, self.num_hashes, n_buckets // 2)
        if self.lra_quirks:
            seed = 0
        elif self.hash_seed is not None:
            seed = self.hash_seed
        elif self.training:
            return torch.randn(shape, device=device, dtype=dtype)
        else:
            seed = int(self.rotation_seed)
        gen = torch.Generator().manual_seed(seed)
        rot = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        return rot.expand(self.num_heads, *shape[1:])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        length = x.size(1)
        chunk, n_buckets, padded = self.layout(length)
        qk, v = self.proj.queries(x), self.proj.values(x)  # (B, h, L, d)
        keep = mask.to(torch.bool)
        if padded > length:  # zero rows: LRA's padded input through bias-free projections
            qk = F.pad(qk, (0, 0, 0, padded - length))
            v = F.pad(v, (0, 0, 0, padded - length))
            keep = F.pad(keep, (0, padded - length), value=False)
        scale = math.sqrt(self.head_size) if self.lra_quirks else 1.0 / math.sqrt(self.head_size)
        factors = self.factors(n_buckets, chunk)
        y = lsh_attend(
            qk,
            v,
            self.rotations(sum(factors), qk.device, qk.dtype),
            chunk,
            scale,
            None if self.lra_quirks else keep,
            lra=self.lra_quirks,
            dropout=self.attention_dropout,
            training=self.training,
            factors=factors,
        )
        return self.proj.output(y[:, :, :length])  # (B, h, L, d) -> (B, L, D)
