"""Moving-average equipped gated attention, the Mega sub-layer (paper §3.2-3.4, eqs. 6-16;
original `moving_average_gated_attention.py`), with Mega-chunk (§3.5) and decoding state.

For input X (B, L, D) and its normalised form X' (pre-norm) or X (post-norm):
    X_ema = EMA(X')                                      eq. 6 (module `ema_gate`)
    v     = act(X' W_v)           (B, L, H)              eq. 10 (`v_proj`)
    [u | z | r | hx] = split(X_ema W_mx):                (`mx_proj`, D -> D + Z + H + D)
        phi = sigmoid(u)          update gate            eq. 14
        z, r = silu(.)            shared rep. / reset    eqs. 7, 12
        hx                        candidate's EMA term   eq. 13
    q = z * kappa_q + mu_q, k = z * kappa_k + mu_k       eqs. 8-9 (`qk_weight`, `qk_bias`: (2, Z))
    O = f(q k^T + b_rel) v        single head            eq. 11 (chunked: within chunks of C)
    H_hat = act(hx + (O * r) W_h)                        eq. 15 (`h_proj`)
    Y = X + phi * (H_hat - X)                            eq. 16, residual = un-normalised X
f is softmax(q k^T / sqrt(Z) + b) (fp32 inside SDPA), or laplace / relu2 of (q k^T / n + b) with n
the number of visible, non-padded keys (unnormalised "element" attention).

Masks follow HF: `attention_mask` (B, L) with 1 = keep, for every attention function. A query row
that has no visible real key (an all-padding chunk, or a causal row inside left padding) attends
without the padding mask instead of producing NaN (the original does this for all-padding chunks).

Chunking: any length works. The layer pads to a multiple of C internally and un-pads. Chunks are
aligned to each row's first real token (rows are rotated so real tokens start at 0), so a
left-padded batch gives the outputs of its unpadded rows; padding must be at the ends of a row.

Speed and memory: softmax attention (no attention dropout) runs the kernel that
`config.attention_backend` picks (`attention_backends.py`: on CPU the blocked
`blocked_softmax_attention`, on CUDA SDPA's memory-efficient kernel or FlexAttention); laplace and
relu2 run `blocked_element_attention` on every device. None of them keeps a (C, C) matrix for the
backward. Other cases (attention dropout; softmax with mixed dtypes under autocast on the
reference backend) attend per chunk, and spans longer than `config.attention_block_size` in query
blocks recomputed in the backward (activation checkpointing). Setting `fused_attention = False` on
a layer selects this plain reference path for every function; all paths give the same values.

Decoding: with `use_cache=True` the layer returns an `AttentionState` (EMA state + the keys and
values of each row's current chunk); feeding it back processes new tokens one step at a time and
reproduces the full forward for every attention function, with and without chunking/truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mega_lra.configuration import MegaConfig
from mega_lra.layers.activations import ELEMENT_ATTENTION, get_activation
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
from mega_lra.layers.dropout import SequenceDropout
from mega_lra.layers.ema import EMAState, MultiDimensionDampedEMA
from mega_lra.layers.norms import SequenceNorm
from mega_lra.layers.relative_position import (
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
)


@dataclass
class AttentionState:
    """Decoding state of one Mega layer (our layout, not HF's 3-tuple).

    ema:        the EMA's state (h and, with truncation, the input window).
    keys:       (B, Lk, Z) keys of the last Lk positions (absolute times length-Lk .. length-1).
    values:     (B, Lk, H) their values.
    key_valid:  (B, Lk) bool: the key is a real token in the row's current chunk.
    real_count: (B,) number of real tokens each row has read (chunks are aligned to them).
    length:     number of positions read so far (padding included).
    """

    ema: EMAState | None  # None when the layer has no EMA (ema_projection_size = 0)
    keys: torch.Tensor
    values: torch.Tensor
    key_valid: torch.Tensor
    real_count: torch.Tensor
    length: int

    def index_select(self, index: torch.Tensor) -> AttentionState:
        """Reorder/select rows (beam search)."""
        return AttentionState(
            None if self.ema is None else self.ema.index_select(index),
            self.keys.index_select(0, index),
            self.values.index_select(0, index),
            self.key_valid.index_select(0, index),
            self.real_count.index_select(0, index),
            self.length,
        )


def _rotate_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out[b, i] = x[b, (i + shift[b]) % L] for x (B, L, ...)."""
    length = x.size(1)
    index = (torch.arange(length, device=x.device) + shift.unsqueeze(1)) % length  # (B, L)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class MovingAverageGatedAttention(nn.Module):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        d, h, z = config.hidden_size, config.intermediate_size, config.shared_representation_size
        self.hidden_size, self.intermediate_size, self.zdim = d, h, z
        self.prenorm = config.normalize_before_mega
        self.causal = bool(config.is_decoder)
        self.chunk_size = config.effective_chunk_size
        self.attention_activation = config.attention_activation
        self.attention_dropout = config.attention_probs_dropout_prob
        self.attention_block_size = config.attention_block_size
        # reference | sdpa | flex | auto: the kernel of softmax attention (attention_backends.py)
        self.attention_backend = config.attention_backend
        # False selects the plain reference path (`_attend_block`: SDPA over each chunk, or
        # checkpointed query blocks) for every attention function and ignores the backend
        self.fused_attention = True
        self.activation = get_activation(config.activation)
        self.init_std = config.initializer_range

        self.norm = SequenceNorm.from_config(config)
        # h = 0 (Figure 4's ablation) removes the EMA: its input takes the place of its output
        self.ema_gate = (
            None
            if config.ema_projection_size == 0
            else MultiDimensionDampedEMA(
                d,
                config.ema_projection_size,
                bidirectional=config.bidirectional,
                truncation=config.truncation,
                delta_alpha_range=config.ema_delta_alpha_range,
                beta_range=config.ema_beta_range,
                gamma_omega_range=config.ema_gamma_omega_range,
            )
        )
        self.v_proj = nn.Linear(d, h)
        self.mx_proj = nn.Linear(d, z + h + 2 * d)
        self.h_proj = nn.Linear(h, d)
        self.qk_weight = nn.Parameter(torch.empty(2, z))
        self.qk_bias = nn.Parameter(torch.empty(2, z))
        if config.relative_positional_bias == "simple":
            self.rel_pos_bias = SimpleRelativePositionalBias(
                config.relative_bias_max_positions,
                center=config.relative_bias_center,
                std=config.initializer_range,
            )
        else:
            self.rel_pos_bias = RotaryRelativePositionalBias(z, std=config.initializer_range)
        if self.chunk_size > 0:
            self.rel_pos_bias.check_length(self.chunk_size)
        self.dropout = SequenceDropout(config.dropout_prob, config.use_feature_dropout)
        self.hidden_dropout = SequenceDropout(
            config.hidden_dropout_prob, config.use_feature_dropout
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for linear in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(linear.weight, 0.0, self.init_std)
            nn.init.zeros_(linear.bias)
        nn.init.normal_(self.qk_weight, 0.0, self.init_std)
        nn.init.zeros_(self.qk_bias)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: AttentionState | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, AttentionState | None]:
        """x: (B, L, D); attention_mask: (B, L), 1 = real token. Returns (Y (B, L, D), state)."""
        if (state is not None or use_cache) and not self.causal:
            raise ValueError("decoding with a state needs a causal model (config.is_decoder=True)")
        valid = None if attention_mask is None else attention_mask.to(torch.bool)
        residual = x
        xn = self.norm(x, valid) if self.prenorm else x
        v = self.activation(self.v_proj(xn))  # (B, L, H)
        if self.ema_gate is None:
            mx, ema_state = xn, None
        else:
            mx, ema_state = self.ema_gate(
                xn,
                valid,
                state=None if state is None else state.ema,
                return_state=use_cache,
            )
        base = self.mx_proj(self.dropout(mx))  # (B, L, D + Z + H + D)
        u, zr, hx = torch.split(
            base, [self.hidden_size, self.zdim + self.intermediate_size, self.hidden_size], dim=-1
        )
        u = torch.sigmoid(u)
        z, r = torch.split(F.silu(zr), [self.zdim, self.intermediate_size], dim=-1)
        qk = z.unsqueeze(-2) * self.qk_weight + self.qk_bias  # (B, L, 2, Z)
        q, k = qk.unbind(dim=-2)
        v = self.hidden_dropout(v)

        new_state = None
        if state is not None:
            o, new_state = self._attend_steps(q, k, v, valid, state, ema_state)
        else:
            o = self._attend(q, k, v, valid)
            if use_cache:
                new_state = self._state_after(k, v, valid, ema_state)

        hidden = self.activation(hx + self.h_proj(o * r))  # (B, L, D)
        hidden = self.dropout(hidden)
        out = torch.addcmul(residual, u, hidden - residual)
        if not self.prenorm:
            out = self.norm(out, valid)
        return out, new_state

    # ----------------------------------------------------- full-sequence attention
    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """q, k (B, L, Z), v (B, L, H), valid (B, L) bool or None -> O (B, L, H)."""
        batch, length, _ = q.shape
        chunk = self.chunk_size if 0 < self.chunk_size < length else length
        n_chunks = -(-length // chunk)
        padded = n_chunks * chunk

        shift = None
        if valid is not None and n_chunks > 1:
            first_real = valid.to(torch.int8).argmax(dim=1)  # (B,) 0 for rows without padding
            if bool(first_real.any()):
                shift = first_real
                q, k, v, valid = (_rotate_rows(t, shift) for t in (q, k, v, valid))
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
        self.rel_pos_bias.check_length(chunk)
        pos = torch.arange(chunk, device=q.device)
        block = self.attention_block_size
        dropout = self.attention_dropout if self.training else 0.0
        softmax = self.attention_activation == "softmax"
        backend = "reference"
        if self.fused_attention:
            backend = resolve_backend(
                self.attention_backend,
                q.device,
                softmax=softmax,
                dropout=dropout,
                dtype=compute_dtype(q.device.type, q, k, v),
            )
        # query rows per block of the blocked kernels: <= 512 on CPU (cache-sized, see
        # FUSED_BLOCK_ROWS), attention_block_size elsewhere (fewer launches)
        rows = block or chunk
        if q.device.type == "cpu":
            rows = min(rows, FUSED_BLOCK_ROWS)
        if backend == "flex":
            o = self._attend_flex(q, k, v, key_real)
        elif backend == "sdpa":
            o = self._attend_sdpa(q, k, v, pos, key_real, dropout)
        elif (
            self.fused_attention
            and softmax
            and not dropout
            and q.dtype == v.dtype  # under autocast v is half precision while q is not
            and q.dtype in (torch.float32, torch.float64)
        ):
            o = self._attend_fused(q, k, v, key_real, rows)
        elif self.fused_attention and not softmax and not dropout:
            o = self._attend_element(q, k, v, key_real, rows)
        elif block is None or chunk <= block:
            o = self._attend_block(q, k, v, pos, pos, key_real)
        else:
            # query blocks against the (visible) keys; the backward recomputes each block, so
            # no (C, C) matrix is kept: memory O(C * block) per layer
            outs = []
            for start in range(0, chunk, block):
                end = min(start + block, chunk)
                keys = end if self.causal else chunk  # a causal block sees no later keys
                args = (
                    q[:, :, start:end],
                    k[:, :, :keys],
                    v[:, :, :keys],
                    pos[start:end],
                    pos[:keys],
                    None if key_real is None else key_real[..., :keys],
                )
                if torch.is_grad_enabled():
                    outs.append(checkpoint(self._attend_block, *args, use_reentrant=False))
                else:
                    outs.append(self._attend_block(*args))
            o = torch.cat(outs, dim=2)

        o = o.reshape(batch, padded, -1)[:, :length]
        if shift is not None:
            o = _rotate_rows(o, -shift)
        return o

    def _attend_fused(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_real: torch.Tensor | None,
        block: int,
    ) -> torch.Tensor:
        """Softmax attention through `blocked_softmax_attention` (same values as
        `_attend_block`; keeps no (C, C) matrix for the backward). q, k (B, n, C, Z)."""
        q = q * self.zdim**-0.5
        return self._per_chunk(blocked_softmax_attention, q, k, v, key_real, block)

    def _per_chunk(self, kernel, q, k, v, key_real, block, *extra) -> torch.Tensor:
        """Run a blocked kernel with every chunk as one group: q, k (B, n, C, Z), v (B, n, C, H),
        key_real (B, n, 1, C) or None -> (B, n, C, H); the bias enters as `_bias_operands`."""
        batch, n_chunks, chunk, _ = q.shape
        q, k, table, center = self._bias_operands(q, k)
        groups = batch * n_chunks
        o = kernel(
            q.reshape(groups, chunk, -1),
            k.reshape(groups, chunk, -1),
            v.reshape(groups, chunk, -1),
            table,
            center,
            None if key_real is None else key_real.reshape(groups, 1, chunk),
            self.causal,
            block,
            *extra,
        )
        return o.view(batch, n_chunks, chunk, -1)

    def _bias_operands(
        self, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """(q, k, table, center) for the fused kernels: the simple bias as its table and the
        table index of offset 0; the rotary bias a_i . b_j folded into q and k as Z more
        columns of the product q k^T (no table)."""
        if isinstance(self.rel_pos_bias, SimpleRelativePositionalBias):
            return q, k, self.rel_pos_bias.rel_pos_bias, self.rel_pos_bias.center
        return (*self._rotary_columns(q, k), None, 0)

    def _rotary_columns(
        self, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold the rotary bias a_i . b_j into the product: q' = [q, a_i], k' = [k, b_j] for q, k
        (B, n, C, .) at positions 0..C-1 of their chunks."""
        batch, n_chunks, chunk, _ = q.shape
        pos = torch.arange(chunk, device=q.device)
        a, b = self.rel_pos_bias.factors(pos, pos)  # (C, Z) each
        q = torch.cat([q, a.to(q.dtype).expand(batch, n_chunks, chunk, -1)], dim=-1)
        k = torch.cat([k, b.to(k.dtype).expand(batch, n_chunks, chunk, -1)], dim=-1)
        return q, k

    def _attend_element(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_real: torch.Tensor | None,
        block: int,
    ) -> torch.Tensor:
        """laplace / relu2 attention through `blocked_element_attention` (same values as
        `_attend_block`; keeps no (C, C) matrix for the backward). q, k (B, n, C, Z)."""
        chunk = q.size(2)
        # n_i = number of visible real keys of row i (>= 1): q k^T / n = (q / n) k^T
        if key_real is None:
            n_keys = (
                torch.arange(1, chunk + 1, device=q.device, dtype=q.dtype).unsqueeze(-1)
                if self.causal
                else torch.tensor(float(chunk), device=q.device, dtype=q.dtype)
            )
        else:
            real = key_real.squeeze(-2).to(q.dtype)  # (B, n, C)
            counts = real.cumsum(-1) if self.causal else real.sum(-1, keepdim=True)
            n_keys = counts.clamp(min=1).unsqueeze(-1)  # (B, n, C|1, 1)
        q = q / n_keys
        return self._per_chunk(
            blocked_element_attention, q, k, v, key_real, block, self.attention_activation
        )

    def _attend_sdpa(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pos: torch.Tensor,
        key_real: torch.Tensor | None,
        dropout: float,
    ) -> torch.Tensor:
        """Softmax attention of each chunk in one `scaled_dot_product_attention` call (CUDA: the
        memory-efficient kernel): the simple bias as a float mask (with its gradient), the
        rotary bias folded into q and k. q, k (B, n, C, Z), v (B, n, C, H)."""
        visible = self._visible(pos, pos, key_real, fallback=True)
        scale = self.zdim**-0.5
        if isinstance(self.rel_pos_bias, SimpleRelativePositionalBias):
            mask = hankel_bias(self.rel_pos_bias.rel_pos_bias, self.rel_pos_bias.center, q.size(2))
            if visible is not None:
                mask = mask.masked_fill(~visible, float("-inf"))
        else:
            q, k = self._rotary_columns(q * scale, k)
            scale, mask = 1.0, visible
        return sdpa_attention(q, k, v, mask, scale, dropout)

    def _attend_flex(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_real: torch.Tensor | None,
    ) -> torch.Tensor:
        """Softmax attention through FlexAttention over whole rows: a block mask keeps each query
        in its chunk, a score_mod adds the simple bias from its table. q, k (B, n, C, Z)."""
        batch, n_chunks, chunk, _ = q.shape
        if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
            raise RuntimeError(
                "attention_backend='flex' cannot train on CPU (FlexAttention has no CPU backward);"
                " use 'auto', 'reference' or 'sdpa'"
            )
        q = q * self.zdim**-0.5
        q, k, table, center = self._bias_operands(q, k)
        length = n_chunks * chunk
        o = flex_chunk_attention(
            q.reshape(batch, length, -1),
            k.reshape(batch, length, -1),
            v.reshape(batch, length, -1),
            chunk,
            self.causal,
            None if key_real is None else key_real.reshape(batch, length),
            table,
            center,
        )
        return o.view(batch, n_chunks, chunk, -1)

    def _visible(
        self,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        key_real: torch.Tensor | None,
        fallback: bool,
    ) -> torch.Tensor | None:
        """(B|1, n|1, Cq|1, Ck) bool: key j is visible and real for query i, or None (all).
        With `fallback` (softmax), rows with no visible real key see the causal (or all) keys."""
        causal = None
        if self.causal:
            causal = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1)  # (Cq, Ck)
        visible = causal
        if key_real is not None:
            visible = key_real if causal is None else key_real & causal
            if fallback:
                # rows with no visible real key attend without the padding mask (no NaN)
                fall = causal if causal is not None else torch.ones_like(key_real)
                visible = torch.where(visible.any(-1, keepdim=True), visible, fall)
        return visible

    def _attend_block(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        key_real: torch.Tensor | None,
    ) -> torch.Tensor:
        """q (B, n, Cq, Z), k (B, n, Ck, Z), v (B, n, Ck, H) at positions query_pos (Cq,) and
        key_pos (Ck,) of their chunks; key_real (B, n, 1, Ck) bool or None -> O (B, n, Cq, H).
        Every key a query may see is in k (blocks only ever drop keys a causal query cannot see).
        """
        bias = self.rel_pos_bias(query_pos, key_pos).to(q.dtype)  # (Cq, Ck)
        softmax = self.attention_activation == "softmax"
        visible = self._visible(query_pos, key_pos, key_real, fallback=softmax)

        dropout = self.attention_dropout if self.training else 0.0
        if self.attention_activation == "softmax":
            mask = bias if visible is None else bias.masked_fill(~visible, float("-inf"))
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.zdim**-0.5
            )
        if visible is None:
            n_keys = torch.tensor(float(k.size(-2)), dtype=q.dtype, device=q.device)
        else:
            n_keys = visible.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)
        scores = torch.matmul(q, k.transpose(-1, -2)) / n_keys + bias
        weights = ELEMENT_ATTENTION[self.attention_activation](scores)
        if visible is not None:
            weights = weights * visible.to(weights.dtype)
        if dropout:
            weights = F.dropout(weights, dropout, training=True)
        return torch.matmul(weights, v)

    # ------------------------------------------------------------- decoding path
    def _state_after(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        valid: torch.Tensor | None,
        ema_state: EMAState | None,
    ) -> AttentionState:
        """State after a full forward over (B, L) positions."""
        batch, length, _ = k.shape
        if valid is None:
            valid = torch.ones(batch, length, dtype=torch.bool, device=k.device)
        real_count = valid.sum(dim=1)
        in_chunk = valid
        if self.chunk_size > 0:
            real_index = valid.cumsum(dim=1) - 1
            current = (real_count - 1).div(self.chunk_size, rounding_mode="floor")
            in_chunk = valid & (
                real_index.div(self.chunk_size, rounding_mode="floor") == current[:, None]
            )
        first = self._first_needed(in_chunk)
        return AttentionState(
            ema=ema_state,
            keys=k[:, first:],
            values=v[:, first:],
            key_valid=in_chunk[:, first:],
            real_count=real_count,
            length=length,
        )

    @staticmethod
    def _first_needed(key_valid: torch.Tensor) -> int:
        any_valid = key_valid.any(dim=0)
        if not bool(any_valid.any()):
            return key_valid.size(1)
        return int(any_valid.to(torch.int8).argmax())

    def _attend_steps(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        valid: torch.Tensor | None,
        state: AttentionState,
        ema_state: EMAState,
    ) -> tuple[torch.Tensor, AttentionState]:
        """Attend for new tokens q, k (B, m, Z), v (B, m, H) one position at a time."""
        batch, steps, _ = q.shape
        keys, values, key_valid = state.keys, state.values, state.key_valid
        real_count, length = state.real_count, state.length
        outputs = []
        for t in range(steps):
            real = (
                torch.ones(batch, dtype=torch.bool, device=q.device)
                if valid is None
                else valid[:, t]
            )
            if self.chunk_size > 0:  # a real token opening a new chunk forgets the old keys
                opens = real & (real_count % self.chunk_size == 0)
                key_valid = key_valid & ~opens[:, None]
            keys = torch.cat([keys, k[:, t : t + 1]], dim=1)
            values = torch.cat([values, v[:, t : t + 1]], dim=1)
            key_valid = torch.cat([key_valid, real[:, None]], dim=1)
            first = self._first_needed(key_valid)
            keys, values, key_valid = keys[:, first:], values[:, first:], key_valid[:, first:]

            span = keys.size(1)
            ages = torch.arange(span - 1, -1, -1, device=q.device)  # time of query minus key
            if self.chunk_size > 0:
                qpos = real_count % self.chunk_size  # (B,) position of this token in its chunk
            else:
                qpos = torch.full((batch,), length, device=q.device, dtype=torch.long)
                self.rel_pos_bias.check_length(length + 1)
            kpos = qpos[:, None] - ages  # (B, span); only valid keys' entries are used
            bias = self.rel_pos_bias(qpos[:, None], kpos).to(q.dtype)  # (B, 1, span)

            qt = q[:, t : t + 1]  # (B, 1, Z)
            vis = key_valid[:, None, :]  # (B, 1, span)
            if self.attention_activation == "softmax":
                vis = torch.where(vis.any(-1, keepdim=True), vis, torch.ones_like(vis))
                scores = torch.matmul(qt, keys.transpose(1, 2)) * self.zdim**-0.5 + bias
                scores = scores.masked_fill(~vis, float("-inf"))
                weights = torch.softmax(
                    scores.to(torch.promote_types(q.dtype, torch.float32)), dim=-1
                ).to(q.dtype)
            else:
                n_keys = vis.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)
                scores = torch.matmul(qt, keys.transpose(1, 2)) / n_keys + bias
                weights = ELEMENT_ATTENTION[self.attention_activation](scores) * vis.to(q.dtype)
            outputs.append(torch.matmul(weights, values))  # (B, 1, H)
            real_count = real_count + real.long()
            length += 1
        state = AttentionState(ema_state, keys, values, key_valid, real_count, length)
        return torch.cat(outputs, dim=1), state
