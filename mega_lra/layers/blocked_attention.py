"""Softmax attention with Mega's relative-position bias, computed in query blocks by a custom
autograd Function that keeps only the output and each row's log-sum-exp for the backward (the
scheme of FlashAttention, Dao et al. 2022, here with plain batched matmuls):

    S = q k^T + b + m         q pre-scaled by Z^-1/2; b[i, j] = table[center + j - i] (simple
                              bias) or 0; m = 0 / -inf from the key padding and causal masks
    P = exp(S - lse),  lse = logsumexp_j S[i, j],  O = P v
backward, per query block with S recomputed from q, k (a Z-wide matmul, not a forward pass):
    dv += P^T dO,  dP = dO v^T,  dS = P * (dP - rowsum(dO * O)),  dq = dS k,  dk += dS^T q,
    d table[center + j - i] += dS[i, j]   (sums along the diagonals of dS)

Memory is O(L * block) instead of the O(L^2) probabilities autograd would keep, and the backward
costs 4Z + 3H instead of 3(Z + H) multiply-adds per score (+7% for Z = 64, H = 256). The rotary
bias a_i . b_j is folded into the product by the caller (q' = [q, a], k' = [k, b]). Rows without
a visible key attend to the causal (or all) keys, as in `attention_dispatch.py`. Values and
gradients equal the reference path's (`tests/layers/test_gated_attention.py`), fp32 rel. error
~1e-6.

`blocked_element_attention` does the same for Mega's unnormalised laplace / relu2 attention:
    S = q k^T + b (q pre-divided by each row's visible-key count), W = f(S) * visible, O = W v
backward per query block, S recomputed: dv += W^T dO, dS = (dO v^T) * f'(S) * visible,
dq = dS k, dk += dS^T q, d table from the anti-diagonals of dS. Scores and f run in float32 (or
float64), W v in v's dtype (bf16 under autocast: a GEMM with float32 accumulation).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mega_lra.layers.activations import LAPLACE_MU, LAPLACE_SIGMA


def bias_rows(table: torch.Tensor, center: int, last_query: int, n_q: int, n_k: int):
    """(n_q, n_k) bias of the queries last_query, last_query - 1, ... (reversed order) against
    keys 0..n_k-1. Reversed, entry (i', j) is table[center - last_query + i' + j]: a Hankel
    matrix, i.e. a strided view (strides (1, 1)) of the table, with nothing copied."""
    table = table.contiguous()
    offset = table.storage_offset() + center - last_query
    return table.as_strided((n_q, n_k), (1, 1), offset)


def antidiagonal_sums(grad: torch.Tensor, padded: torch.Tensor | None = None) -> torch.Tensor:
    """(n_q, n_k) -> (n_q + n_k - 1,): out[c] = sum of grad[i, j] over i + j = c.

    Rows padded by n_q zeros and read back with a row length one shorter are shifted right by
    their index: (i, j) lands in column i + j; then the columns are summed. `padded` may be a
    (n_q, n_k + n_q) buffer whose first n_k columns already hold grad and the rest zeros.
    """
    n_q, n_k = grad.shape
    width = n_q + n_k - 1
    if padded is None:
        padded = F.pad(grad, (0, n_q))  # (n_q, n_k + n_q)
    return padded.reshape(-1)[: n_q * width].view(n_q, width).sum(0)


def _scores(q_rev, k, table, center, last, out, shift=None):
    """out (G, Bq, Lk) = q_rev k^T + bias - shift for the queries last, last-1, ... (q_rev
    (G, Bq, Zq), reversed) against k (G, Lk, Zq); shift (G, Bq, 1) or None. No masking."""
    groups, n_q, n_k = out.shape
    bias = None if table is None else bias_rows(table.to(q_rev.dtype), center, last, n_q, n_k)
    if shift is None and bias is None:
        torch.bmm(q_rev, k.transpose(1, 2), out=out)
    else:
        if shift is None:
            out.copy_(bias.expand(groups, n_q, n_k))
        elif bias is None:
            out.copy_(shift.neg().expand(groups, n_q, n_k))
        else:
            torch.sub(bias, shift, out=out)
        out.baddbmm_(q_rev, k.transpose(1, 2))
    return out


def _visible(key_real, causal, last, n_q, n_k, device, fallback):
    """(G|1, Bq, Lk) bool or None: key j is visible to the reversed queries last, last-1, ...
    (real and, causal, not later). With `fallback`, rows without a visible key see the causal
    (or all) keys instead (softmax: no NaN)."""
    visible = None
    causal_mask = None
    if causal:
        pos_q = last - torch.arange(n_q, device=device)
        causal_mask = torch.arange(n_k, device=device) <= pos_q.unsqueeze(1)  # (Bq, Lk)
        visible = causal_mask.unsqueeze(0)
    if key_real is not None:
        visible = key_real if visible is None else key_real & visible
        if fallback:
            fall = torch.ones_like(key_real) if causal_mask is None else causal_mask.unsqueeze(0)
            visible = torch.where(visible.any(-1, keepdim=True), visible, fall)
    return visible


def _masked_scores(q_rev, k, table, center, key_real, causal, last, out, shift=None):
    """Softmax scores: `_scores` with invisible keys at -inf (rows without one: see `_visible`)."""
    _scores(q_rev, k, table, center, last, out, shift)
    n_q, n_k = out.shape[1:]
    visible = _visible(key_real, causal, last, n_q, n_k, q_rev.device, fallback=True)
    if visible is not None:
        out.masked_fill_(~visible, float("-inf"))
    return out


# Query rows per block in `chunked_attention` (4K full attention on the 2-core test
# machine: 930-965 ms with 256-512 rows, 990 ms with 2048, 1010 ms with 4096).
FUSED_BLOCK_ROWS = 512

_WORKSPACE = threading.local()


def _workspace(slot: int, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Scratch tensor of `shape` (contents undefined) for slot 0 (S / P) or 1 (dS), reused by
    every block, layer and step of this thread on CPU. A fresh 32 MB buffer costs ~5 ms of page
    faults on first touch (glibc returns large blocks to the OS when freed); the cache holds at
    most one buffer per slot, as large as the largest block seen (`release_workspace` frees)."""
    if like.device.type != "cpu":
        return like.new_empty(shape)
    cache = _WORKSPACE.__dict__.setdefault("buffers", {})
    key, numel = (slot, like.dtype), math.prod(shape)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        cache[key] = buf = like.new_empty(numel)
    return buf[:numel].view(shape)


def release_workspace() -> None:
    """Free this thread's cached scratch buffers."""
    _WORKSPACE.__dict__.pop("buffers", None)


class _BlockedSoftmaxAttention(torch.autograd.Function):
    # Inside a block the queries run in reversed order (rows flipped), which makes the bias block
    # a strided view of the table and its gradient a sum over anti-diagonals.
    @staticmethod
    def forward(ctx, q, k, v, table, center, key_real, causal, block):
        # q, k (G, L, Zq) (q pre-scaled), v (G, L, H), table (T,) or None, key_real (G, 1, L)
        groups, length = q.shape[:2]
        out = q.new_empty(groups, length, v.size(2))
        lse = q.new_empty(groups, length)
        for start in range(0, length, block):
            end = min(start + block, length)
            n_k = end if causal else k.size(1)  # a causal block sees no later keys
            s = _workspace(0, q, (groups, end - start, n_k))
            _masked_scores(
                q[:, start:end].flip(1),
                k[:, :n_k],
                table,
                center,
                key_real_keys(key_real, n_k),
                causal,
                end - 1,
                s,
            )
            row_max = s.amax(-1, keepdim=True)  # (G, Bq, 1)
            s.sub_(row_max).exp_()
            total = s.sum(-1, keepdim=True)
            out[:, start:end] = (torch.bmm(s, v[:, :n_k]) / total).flip(1)
            lse[:, start:end] = (row_max + total.log()).squeeze(-1).flip(1)
        ctx.save_for_backward(q, k, v, table, key_real, out, lse)
        ctx.center, ctx.causal, ctx.block = center, causal, block
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, table, key_real, out, lse = ctx.saved_tensors
        center, causal, block = ctx.center, ctx.causal, ctx.block
        groups, length = q.shape[:2]
        grad_out = grad_out.contiguous()
        delta = (grad_out * out).sum(-1, keepdim=True)  # (G, L, 1)
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dtable = None
        if table is not None and ctx.needs_input_grad[3]:
            dtable = torch.zeros_like(table, dtype=q.dtype)
        zeroed = None  # shape of the row-padded dS buffer whose padding is known to be zero
        for start in range(0, length, block):
            end = min(start + block, length)
            n_q, n_k = end - start, end if causal else k.size(1)
            q_rev, go = q[:, start:end].flip(1), grad_out[:, start:end].flip(1)
            p = _workspace(0, q, (groups, n_q, n_k))
            _masked_scores(
                q_rev,
                k[:, :n_k],
                table,
                center,
                key_real_keys(key_real, n_k),
                causal,
                end - 1,
                p,
                shift=lse[:, start:end, None].flip(1),
            ).exp_()
            dv[:, :n_k].baddbmm_(p.transpose(1, 2), go)
            # dS = P * (dO v^T - delta); for one group it is built inside a row-padded buffer
            # (pad zeroed once) so that its anti-diagonal sums (the bias gradient) need no copy
            if groups > 1:
                ds = padded = _workspace(1, q, (groups, n_q, n_k))
            else:
                padded = _workspace(1, q, (1, n_q, n_k + n_q))
                if zeroed != padded.shape:
                    padded[..., n_k:].zero_()
                    zeroed = padded.shape
                ds = padded[..., :n_k]
            ds.copy_(delta[:, start:end].flip(1).neg().expand(groups, n_q, n_k))
            ds.baddbmm_(go, v[:, :n_k].transpose(1, 2)).mul_(p)
            dq[:, start:end] = torch.bmm(ds, k[:, :n_k]).flip(1)
            dk[:, :n_k].baddbmm_(ds.transpose(1, 2), q_rev)
            if dtable is not None:
                first = center - (end - 1)  # table index of entry (0, 0) of the reversed block
                sums = (
                    antidiagonal_sums(ds[0], padded[0])
                    if groups == 1
                    else antidiagonal_sums(ds.sum(0))
                )
                dtable[first : first + n_q + n_k - 1] += sums
        if dtable is not None:
            dtable = dtable.to(table.dtype)
        return dq, dk, dv, dtable, None, None, None, None


_LAPLACE_SCALE = 1.0 / (LAPLACE_SIGMA * math.sqrt(2.0))
_LAPLACE_SLOPE = 1.0 / (LAPLACE_SIGMA * math.sqrt(2.0 * math.pi))


def _element(s, activation, slope_out=None):
    """In place s -> f(s) for f = laplace or relu2; with `slope_out` (a buffer of s's shape)
    also f'(s) into it. Returns (f(s), f'(s) or None)."""
    slope = None
    if activation == "laplace":
        # t = (s - mu) / (sigma sqrt 2): f = (1 + erf t) / 2, f' = exp(-t^2) / (sigma sqrt(2 pi))
        t = s.sub_(LAPLACE_MU).mul_(_LAPLACE_SCALE)
        if slope_out is not None:
            slope = torch.mul(t, t, out=slope_out).neg_().exp_().mul_(_LAPLACE_SLOPE)
        return t.erf_().add_(1.0).mul_(0.5), slope
    if activation == "relu2":
        r = s.clamp_(min=0.0)
        if slope_out is not None:
            slope = torch.mul(r, 2.0, out=slope_out)
        return r.square_(), slope
    raise ValueError(f"element attention {activation!r}: expected 'laplace' or 'relu2'")


class _BlockedElementAttention(torch.autograd.Function):
    # Same layout as _BlockedSoftmaxAttention (reversed rows, Hankel bias view); nothing but the
    # inputs is kept for the backward, which recomputes S block by block.
    @staticmethod
    def forward(ctx, q, k, v, table, center, key_real, causal, block, activation):
        # q (pre-divided by each row's visible-key count), k (G, L, Zq) float32/64, v (G, L, H)
        groups, length = q.shape[:2]
        out = v.new_empty(groups, length, v.size(2))
        with torch.autocast(q.device.type, enabled=False):
            for start in range(0, length, block):
                end = min(start + block, length)
                n_q, n_k = end - start, end if causal else k.size(1)
                s = _workspace(0, q, (groups, n_q, n_k))
                _scores(q[:, start:end].flip(1), k[:, :n_k], table, center, end - 1, s)
                w, _ = _element(s, activation)
                visible = _visible(
                    key_real_keys(key_real, n_k), causal, end - 1, n_q, n_k, q.device, False
                )
                if visible is not None:
                    w.masked_fill_(~visible, 0.0)
                # W v with W in v's dtype: half-precision GEMMs accumulate in float32
                out[:, start:end] = torch.bmm(w.to(v.dtype), v[:, :n_k]).flip(1)
        ctx.save_for_backward(q, k, v, table, key_real)
        ctx.center, ctx.causal, ctx.block, ctx.activation = center, causal, block, activation
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, table, key_real = ctx.saved_tensors
        center, causal, block, activation = ctx.center, ctx.causal, ctx.block, ctx.activation
        groups, length = q.shape[:2]
        acc = torch.promote_types(v.dtype, torch.float32)
        grad_out = grad_out.to(v.dtype).contiguous()
        dq, dk = torch.empty_like(q), torch.zeros_like(k)
        dv = torch.zeros(v.shape, dtype=acc, device=v.device)
        dtable = None
        if table is not None and ctx.needs_input_grad[3]:
            dtable = torch.zeros_like(table, dtype=q.dtype)
        zeroed = None
        with torch.autocast(q.device.type, enabled=False):
            for start in range(0, length, block):
                end = min(start + block, length)
                n_q, n_k = end - start, end if causal else k.size(1)
                q_rev, go = q[:, start:end].flip(1), grad_out[:, start:end].flip(1)
                s = _workspace(0, q, (groups, n_q, n_k))
                _scores(q_rev, k[:, :n_k], table, center, end - 1, s)
                w, slope = _element(s, activation, _workspace(2, q, (groups, n_q, n_k)))
                visible = _visible(
                    key_real_keys(key_real, n_k), causal, end - 1, n_q, n_k, q.device, False
                )
                if visible is not None:
                    w.masked_fill_(~visible, 0.0)
                    slope.masked_fill_(~visible, 0.0)
                if v.dtype == acc:
                    dv[:, :n_k].baddbmm_(w.transpose(1, 2), go)
                else:
                    dv[:, :n_k] += torch.bmm(w.to(v.dtype).transpose(1, 2), go)
                # dS = dO v^T * f'(S); for one group inside a row-padded buffer (see softmax)
                if dtable is not None and groups == 1:
                    padded = _workspace(1, q, (1, n_q, n_k + n_q))
                    if zeroed != padded.shape:
                        padded[..., n_k:].zero_()
                        zeroed = padded.shape
                    ds = padded[..., :n_k]
                else:
                    padded = None
                    ds = _workspace(1, q, (groups, n_q, n_k))
                if v.dtype == q.dtype:
                    ds.baddbmm_(go, v[:, :n_k].transpose(1, 2), beta=0.0)
                else:
                    ds.copy_(torch.bmm(go, v[:, :n_k].transpose(1, 2)))
                ds.mul_(slope)
                dq[:, start:end] = torch.bmm(ds, k[:, :n_k]).flip(1)
                dk[:, :n_k].baddbmm_(ds.transpose(1, 2), q_rev)
                if dtable is not None:
                    first = center - (end - 1)
                    sums = (
                        antidiagonal_sums(ds[0], padded[0])
                        if padded is not None
                        else antidiagonal_sums(ds.sum(0))
                    )
                    dtable[first : first + n_q + n_k - 1] += sums
        if dtable is not None:
            dtable = dtable.to(table.dtype)
        return dq, dk, dv.to(v.dtype), dtable, None, None, None, None, None


def key_real_keys(key_real: torch.Tensor | None, n_k: int) -> torch.Tensor | None:
    return None if key_real is None else key_real[..., :n_k]


def blocked_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor | None,
    center: int,
    key_real: torch.Tensor | None,
    causal: bool,
    block: int,
) -> torch.Tensor:
    """softmax(q k^T + bias + mask) v for q, k (G, L, Zq) (q pre-scaled), v (G, L, H), the simple
    bias table (T,) indexed at center + j - i (or None), key_real (G, 1, L) bool (or None).
    Returns (G, L, H). Every offset j - i must lie inside the table."""
    return _BlockedSoftmaxAttention.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), table, center, key_real, causal, block
    )


def blocked_element_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    table: torch.Tensor | None,
    center: int,
    key_real: torch.Tensor | None,
    causal: bool,
    block: int,
    activation: str,
) -> torch.Tensor:
    """(f(q k^T + bias) * visible) v for f = laplace or relu2 (unnormalised), q (G, L, Zq) already
    divided by each row's number of visible keys, k (G, L, Zq), v (G, L, H); bias and key_real
    as in `blocked_softmax_attention`; visible = real and (causal) not later, without fallback.
    Scores and f run in max(q dtype, float32); W v in v's dtype (half-precision GEMMs accumulate
    in float32). Returns (G, L, H) in v's dtype; keeps only the inputs for the backward."""
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), torch.float32)
    return _BlockedElementAttention.apply(
        q.to(dtype).contiguous(),
        k.to(dtype).contiguous(),
        v.contiguous(),
        table,
        center,
        key_real,
        causal,
        block,
        activation,
    )
