"""Mega's chunked single-head attention over a whole sequence (paper eq. 11 with §3.5's chunks):
which kernel computes O = f(q k^T + b_rel) v for one call, and the chunk bookkeeping around it.

`chunked_attention` is the one function `MovingAverageGatedAttention` calls. With Z the width of
q and k and n_i the number of visible real keys of query i:
    softmax:         O = softmax(q k^T / sqrt(Z) + b + mask) v   (fp32 inside the kernels)
    laplace / relu2: O = (f(q k^T / n_i + b) * visible) v        (unnormalised "element" attention)
where b[i, j] is the relative positional bias (`relative_position.py`) of key j for query i
inside one chunk. A key is visible when it is real (HF mask, 1 = keep), in the query's chunk and
(causal) not later. A softmax row with no visible real key (an all-padding chunk, or a causal row
inside left padding) attends without the padding mask instead of producing NaN (the original does
this for all-padding chunks).

Chunking: any length works. The sequence is padded to a multiple of C and un-padded. Chunks are
aligned to each row's first real token (rows are rotated so real tokens start at 0), so a
left-padded batch gives the outputs of its unpadded rows; padding must be at the ends of a row.

Kernels (all give the same values; the tests compare them):
- softmax without attention dropout: the kernel `attention_backend` picks (`attention_backends.py`:
  on CPU the blocked `blocked_softmax_attention`, on CUDA SDPA's memory-efficient kernel or
  FlexAttention);
- laplace and relu2 without attention dropout: `blocked_element_attention`, on every device;
- otherwise (attention dropout; softmax with mixed dtypes under autocast on the reference
  backend; `fused=False`): the plain reference path, SDPA or matmuls over each chunk, and spans
  longer than `block_size` in query blocks recomputed in the backward (activation
  checkpointing). None of the paths keeps a (C, C) matrix for the backward except the plain one
  on spans up to `block_size`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mega_lra.layers.activations import ELEMENT_ATTENTION
from mega_lra.layers.attention_backends import (
    compute_dtype,
    flex_chunk_attention,
    hankel_bias,
    resolve_backend,
    sdpa_attention,
)
from mega_lra.layers.blocked_attention import (
    FUSED_BLOCK_ROWS,
    blocked_element_attention,
    blocked_softmax_attention,
)
from mega_lra.layers.relative_position import SimpleRelativePositionalBias


def rotate_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out[b, i] = x[b, (i + shift[b]) % L] for x (B, L, ...)."""
    length = x.size(1)
    index = (torch.arange(length, device=x.device) + shift.unsqueeze(1)) % length  # (B, L)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor | None,
    bias: nn.Module,
    *,
    activation: str,
    causal: bool,
    chunk_size: int,
    dropout: float = 0.0,
    block_size: int | None = None,
    backend: str = "auto",
    fused: bool = True,
) -> torch.Tensor:
    """q, k (B, L, Z), v (B, L, H), valid (B, L) bool (True = real token) or None -> O (B, L, H).

    bias: the relative positional bias module (simple or rotary); activation: softmax, laplace
    or relu2; chunk_size: C, or <= 0 for one chunk over the whole sequence; dropout: attention
    dropout (0 in eval); block_size: query rows per block of the blocked and checkpointed paths
    (None = the whole chunk); backend: `attention_backends.BACKENDS`; fused=False selects the
    plain reference path for every function and ignores the backend.
    """
    batch, length, _ = q.shape
    chunk = chunk_size if 0 < chunk_size < length else length
    n_chunks = -(-length // chunk)
    padded = n_chunks * chunk

    shift = None
    if valid is not None and n_chunks > 1:
        first_real = valid.to(torch.int8).argmax(dim=1)  # (B,) 0 for rows without padding
        if bool(first_real.any()):
            shift = first_real
            q, k, v, valid = (rotate_rows(t, shift) for t in (q, k, v, valid))
    if padded != length:
        extra = padded - length
        q, k, v = (F.pad(t, (0, 0, 0, extra)) for t in (q, k, v))
        if valid is None:
            valid = torch.ones(batch, length, dtype=torch.bool, device=q.device)
        valid = F.pad(valid, (0, extra), value=False)

    # (B, n, C, .) chunks; positions 0..C-1 inside each
    q = q.view(batch, n_chunks, chunk, -1)
    k = k.view(batch, n_chunks, chunk, -1)
    v = v.view(batch, n_chunks, chunk, -1)
    key_real = None if valid is None else valid.view(batch, n_chunks, 1, chunk)
    bias.check_length(chunk)
    pos = torch.arange(chunk, device=q.device)
    softmax = activation == "softmax"
    kernel = "reference"
    if fused:
        kernel = resolve_backend(
            backend,
            q.device,
            softmax=softmax,
            dropout=dropout,
            dtype=compute_dtype(q.device.type, q, k, v),
        )
    # query rows per block of the blocked kernels: <= 512 on CPU (cache-sized, see
    # FUSED_BLOCK_ROWS), block_size elsewhere (fewer launches)
    rows = block_size or chunk
    if q.device.type == "cpu":
        rows = min(rows, FUSED_BLOCK_ROWS)
    if kernel == "flex":
        o = _attend_flex(q, k, v, key_real, bias, causal)
    elif kernel == "sdpa":
        o = _attend_sdpa(q, k, v, pos, key_real, bias, causal, dropout)
    elif (
        fused
        and softmax
        and not dropout
        and q.dtype == v.dtype  # under autocast v is half precision while q is not
        and q.dtype in (torch.float32, torch.float64)
    ):
        o = _attend_fused(q, k, v, key_real, bias, causal, rows)
    elif fused and not softmax and not dropout:
        o = _attend_element(q, k, v, key_real, bias, causal, rows, activation)
    elif block_size is None or chunk <= block_size:
        o = _attend_block(q, k, v, pos, pos, key_real, bias, causal, activation, dropout)
    else:
        # query blocks against the (visible) keys; the backward recomputes each block, so
        # no (C, C) matrix is kept: memory O(C * block) per layer
        outs = []
        for start in range(0, chunk, block_size):
            end = min(start + block_size, chunk)
            keys = end if causal else chunk  # a causal block sees no later keys
            args = (
                q[:, :, start:end],
                k[:, :, :keys],
                v[:, :, :keys],
                pos[start:end],
                pos[:keys],
                None if key_real is None else key_real[..., :keys],
                bias,
                causal,
                activation,
                dropout,
            )
            if torch.is_grad_enabled():
                outs.append(checkpoint(_attend_block, *args, use_reentrant=False))
            else:
                outs.append(_attend_block(*args))
        o = torch.cat(outs, dim=2)

    o = o.reshape(batch, padded, -1)[:, :length]
    if shift is not None:
        o = rotate_rows(o, -shift)
    return o


def _attend_fused(q, k, v, key_real, bias, causal, block) -> torch.Tensor:
    """Softmax attention through `blocked_softmax_attention` (same values as `_attend_block`;
    keeps no (C, C) matrix for the backward). q, k (B, n, C, Z)."""
    q = q * q.size(-1) ** -0.5
    return _per_chunk(blocked_softmax_attention, q, k, v, key_real, bias, causal, block)


def _attend_element(q, k, v, key_real, bias, causal, block, activation) -> torch.Tensor:
    """laplace / relu2 attention through `blocked_element_attention` (same values as
    `_attend_block`; keeps no (C, C) matrix for the backward). q, k (B, n, C, Z)."""
    chunk = q.size(2)
    # n_i = number of visible real keys of row i (>= 1): q k^T / n = (q / n) k^T
    if key_real is None:
        n_keys = (
            torch.arange(1, chunk + 1, device=q.device, dtype=q.dtype).unsqueeze(-1)
            if causal
            else torch.tensor(float(chunk), device=q.device, dtype=q.dtype)
        )
    else:
        real = key_real.squeeze(-2).to(q.dtype)  # (B, n, C)
        counts = real.cumsum(-1) if causal else real.sum(-1, keepdim=True)
        n_keys = counts.clamp(min=1).unsqueeze(-1)  # (B, n, C|1, 1)
    q = q / n_keys
    return _per_chunk(blocked_element_attention, q, k, v, key_real, bias, causal, block, activation)


def _per_chunk(kernel, q, k, v, key_real, bias, causal, block, *extra) -> torch.Tensor:
    """Run a blocked kernel with every chunk as one group: q, k (B, n, C, Z), v (B, n, C, H),
    key_real (B, n, 1, C) or None -> (B, n, C, H); the bias enters as `_bias_operands`."""
    batch, n_chunks, chunk, _ = q.shape
    q, k, table, center = _bias_operands(q, k, bias)
    groups = batch * n_chunks
    o = kernel(
        q.reshape(groups, chunk, -1),
        k.reshape(groups, chunk, -1),
        v.reshape(groups, chunk, -1),
        table,
        center,
        None if key_real is None else key_real.reshape(groups, 1, chunk),
        causal,
        block,
        *extra,
    )
    return o.view(batch, n_chunks, chunk, -1)


def _bias_operands(
    q: torch.Tensor, k: torch.Tensor, bias: nn.Module
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """(q, k, table, center) for the fused kernels: the simple bias as its table and the table
    index of offset 0; the rotary bias a_i . b_j folded into q and k as Z more columns of the
    product q k^T (no table)."""
    if isinstance(bias, SimpleRelativePositionalBias):
        return q, k, bias.rel_pos_bias, bias.center
    return (*_rotary_columns(q, k, bias), None, 0)


def _rotary_columns(
    q: torch.Tensor, k: torch.Tensor, bias: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the rotary bias a_i . b_j into the product: q' = [q, a_i], k' = [k, b_j] for q, k
    (B, n, C, .) at positions 0..C-1 of their chunks."""
    batch, n_chunks, chunk, _ = q.shape
    pos = torch.arange(chunk, device=q.device)
    a, b = bias.factors(pos, pos)  # (C, Z) each
    q = torch.cat([q, a.to(q.dtype).expand(batch, n_chunks, chunk, -1)], dim=-1)
    k = torch.cat([k, b.to(k.dtype).expand(batch, n_chunks, chunk, -1)], dim=-1)
    return q, k


def _attend_sdpa(q, k, v, pos, key_real, bias, causal, dropout) -> torch.Tensor:
    """Softmax attention of each chunk in one `scaled_dot_product_attention` call (CUDA: the
    memory-efficient kernel): the simple bias as a float mask (with its gradient), the rotary
    bias folded into q and k. q, k (B, n, C, Z), v (B, n, C, H)."""
    visible = _visible(pos, pos, key_real, causal, fallback=True)
    scale = q.size(-1) ** -0.5
    if isinstance(bias, SimpleRelativePositionalBias):
        mask = hankel_bias(bias.rel_pos_bias, bias.center, q.size(2))
        if visible is not None:
            mask = mask.masked_fill(~visible, float("-inf"))
    else:
        q, k = _rotary_columns(q * scale, k, bias)
        scale, mask = 1.0, visible
    return sdpa_attention(q, k, v, mask, scale, dropout)


def _attend_flex(q, k, v, key_real, bias, causal) -> torch.Tensor:
    """Softmax attention through FlexAttention over whole rows: a block mask keeps each query in
    its chunk, a score_mod adds the simple bias from its table. q, k (B, n, C, Z)."""
    batch, n_chunks, chunk, _ = q.shape
    if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        raise RuntimeError(
            "attention_backend='flex' cannot train on CPU (FlexAttention has no CPU backward);"
            " use 'auto', 'reference' or 'sdpa'"
        )
    q = q * q.size(-1) ** -0.5
    q, k, table, center = _bias_operands(q, k, bias)
    length = n_chunks * chunk
    o = flex_chunk_attention(
        q.reshape(batch, length, -1),
        k.reshape(batch, length, -1),
        v.reshape(batch, length, -1),
        chunk,
        causal,
        None if key_real is None else key_real.reshape(batch, length),
        table,
        center,
    )
    return o.view(batch, n_chunks, chunk, -1)


def _visible(
    query_pos: torch.Tensor,
    key_pos: torch.Tensor,
    key_real: torch.Tensor | None,
    causal: bool,
    fallback: bool,
) -> torch.Tensor | None:
    """(B|1, n|1, Cq|1, Ck) bool: key j is visible and real for query i, or None (all).
    With `fallback` (softmax), rows with no visible real key see the causal (or all) keys."""
    causal_mask = None
    if causal:
        causal_mask = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1)  # (Cq, Ck)
    visible = causal_mask
    if key_real is not None:
        visible = key_real if causal_mask is None else key_real & causal_mask
        if fallback:
            # rows with no visible real key attend without the padding mask (no NaN)
            fall = causal_mask if causal_mask is not None else torch.ones_like(key_real)
            visible = torch.where(visible.any(-1, keepdim=True), visible, fall)
    return visible


def _attend_block(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    query_pos: torch.Tensor,
    key_pos: torch.Tensor,
    key_real: torch.Tensor | None,
    bias: nn.Module,
    causal: bool,
    activation: str,
    dropout: float,
) -> torch.Tensor:
    """The plain reference: q (B, n, Cq, Z), k (B, n, Ck, Z), v (B, n, Ck, H) at positions
    query_pos (Cq,) and key_pos (Ck,) of their chunks; key_real (B, n, 1, Ck) bool or None
    -> O (B, n, Cq, H). Every key a query may see is in k (blocks only ever drop keys a causal
    query cannot see)."""
    b = bias(query_pos, key_pos).to(q.dtype)  # (Cq, Ck)
    softmax = activation == "softmax"
    visible = _visible(query_pos, key_pos, key_real, causal, fallback=softmax)

    if softmax:
        mask = b if visible is None else b.masked_fill(~visible, float("-inf"))
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=q.size(-1) ** -0.5
        )
    if visible is None:
        n_keys = torch.tensor(float(k.size(-2)), dtype=q.dtype, device=q.device)
    else:
        n_keys = visible.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)
    scores = torch.matmul(q, k.transpose(-1, -2)) / n_keys + b
    weights = ELEMENT_ATTENTION[activation](scores)
    if visible is not None:
        weights = weights * visible.to(weights.dtype)
    if dropout:
        weights = F.dropout(weights, dropout, training=True)
    return torch.matmul(weights, v)
