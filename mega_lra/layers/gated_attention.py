"""Moving-average equipped gated attention, the Mega sub-layer (paper §3.2-3.4, eqs. 6-16;
original `moving_average_gated_attention.py`), with Mega-chunk (§3.5) and decoding state.

For input X (B, L, D) and its normalised form X' (pre-norm) or X (post-norm):
    X_ema = EMA(X')                                      eq. 6 (module `ema_gate`; with
                                                         `ema_kernel: s4d` an S4D kernel,
                                                         SiLU(K * X' + D X'), ssm_kernels.py)
    v     = act(X' W_v)           (B, L, H)              eq. 10 (`v_proj`)
    [u | z | r | hx] = split(X_ema W_mx):                (`mx_proj`, D -> D + Z + H + D)
        phi = sigmoid(u)          update gate            eq. 14
        z, r = silu(.)            shared rep. / reset    eqs. 7, 12
        hx                        candidate's EMA term   eq. 13
    q = z * kappa_q + mu_q, k = z * kappa_k + mu_k       eqs. 8-9 (`qk_weight`, `qk_bias`: (2, Z))
    O = f(q k^T + b_rel) v        single head            eq. 11 (chunked: within chunks of C)
    H_hat = act(hx + (O * r) W_h)                        eq. 15 (`h_proj`)
    Y = X + phi * (H_hat - X)                            eq. 16, residual = un-normalised X
f is softmax(q k^T / sqrt(Z) + b) (fp32), or laplace / relu2 of (q k^T / n + b) with n the number
of visible, non-padded keys (unnormalised "element" attention). b_rel is `rel_pos_bias`
(`relative_position.py`: simple, a table of 2M-1 offsets with M = C or `max_positions`, or
rotary). The EMA module's own docstring maps the paper's alpha / delta to the original's swapped
names.

Masks follow HF: `attention_mask` (B, L) with 1 = keep, for every attention function. Eq. 11 over
a whole sequence is `attention_dispatch.chunked_attention`: chunking (any length; chunks aligned
to each row's first real token), the all-padding-row fallback, and the kernel that computes it
(`config.attention_backend`; blocked kernels that keep no (C, C) matrix for the backward).
Setting `fused_attention = False` on a layer selects the plain reference path for every
function; all paths give the same values.

Decoding: with `use_cache=True` the layer returns an `AttentionState` (EMA state + the keys and
values of each row's current chunk); feeding it back processes new tokens one step at a time
(`_attend_steps`, eq. 11 for one query) and reproduces the full forward for every attention
function, with and without chunking/truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.hf.configuration import MegaConfig
from mega_lra.layers.activations import ELEMENT_ATTENTION, get_activation
from mega_lra.layers.attention_dispatch import chunked_attention
from mega_lra.layers.dropout import SequenceDropout
from mega_lra.layers.ema import EMAState, MultiDimensionDampedEMA
from mega_lra.layers.norms import SequenceNorm
from mega_lra.layers.relative_position import (
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
)
from mega_lra.layers.ssm_kernels import S4DGate


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
        # False selects the plain reference path (attention_dispatch: SDPA or matmuls over each
        # chunk, or checkpointed query blocks) for every attention function, ignoring the backend
        self.fused_attention = True
        self.activation = get_activation(config.activation)
        self.init_std = config.initializer_range

        self.norm = SequenceNorm.from_config(config)
        # h = 0 (Figure 4's ablation) removes the EMA: its input takes the place of its output
        self.ema_gate = (
            None
            if config.ema_projection_size == 0
            else S4DGate(
                d,
                config.ema_projection_size,
                bidirectional=config.bidirectional,
                truncation=config.truncation,
            )
            if config.ema_kernel == "s4d"
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
        """Eq. 11 within chunks: q, k (B, L, Z), v (B, L, H), valid (B, L) bool or None
        -> O (B, L, H)."""
        return chunked_attention(
            q,
            k,
            v,
            valid,
            self.rel_pos_bias,
            activation=self.attention_activation,
            causal=self.causal,
            chunk_size=self.chunk_size,
            dropout=self.attention_dropout if self.training else 0.0,
            block_size=self.attention_block_size,
            backend=self.attention_backend,
            fused=self.fused_attention,
        )

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
