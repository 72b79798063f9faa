"""Multi-dimensional damped EMA (paper §3.1, eqs. 2-3), exactly as the original code computes it.

For each of D channels the input is expanded to N dimensions by beta, smoothed by a damped EMA
and projected back by eta:

    h_t = alpha * beta * x_t + (1 - alpha * delta) * h_{t-1}   (per channel d and dimension n)
    y_t = sum_n eta_n * h_t,n

which unrolls to a convolution y = K * x with the kernel
K[d, l] = sum_n eta[d,n] * alpha[d,n] * beta[d,n] * phi[d,n]^l, phi = 1 - alpha * delta.
The layer returns SiLU(y + omega * x), the form of the original code (the SiLU and the omega skip
term are not in the paper's equations). Padded positions of x are zeroed before the convolution;
the omega term uses the unmasked input. The kernel is truncated to k = min(truncation, L) taps.

Bidirectional: 2D kernel rows; rows [0, D) look back, rows [D, 2D) look forward, and both count
the lag-0 term: y_t = sum_{l<k} K1[l] x_{t-l} + sum_{l<k} K2[l] x_{t+l}.

Symbols -> attributes (HF names; the original fairseq code calls them delta, alpha, beta, gamma,
omega, and **swaps alpha and delta relative to the paper**):
    paper alpha (EMA weight)  = sigmoid(damping_factor)       [original: delta]
    paper delta (damping)     = sigmoid(decay_factor)         [original: alpha]
    paper beta (expansion)    = ema_expansion_matrix          (K_d, N, 1)
    paper eta (projection)    = kernel_projection_matrix * sqrt(1/N)   (K_d, N)
    omega (residual weight)   = residual_weight               (D,)
with K_d = 2D when bidirectional, else D. The kernel and the convolution (rfft/irfft)
run in max(input dtype, float32) with autocast off, so float64 stays float64 and bf16/fp16 inputs
or autocast use fp32; the output has the input's dtype.

Incremental decoding (unidirectional only) keeps `EMAState`: h = sum_{l<k} alpha*beta*phi^l x_{t-l}
(B, D, N) and, with truncation k, the last k inputs, because the window forgets x_{t-k}:
h_t = phi h_{t-1} + alpha beta x_t - phi^k alpha beta x_{t-k}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast sizes for pocketfft and cuFFT)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


@dataclass
class EMAState:
    """Decoding state of one EMA layer.

    h:      (B, D, N) sum over the last k lags of alpha*beta*phi^l * x_{t-l} (compute dtype).
    window: (B, w, D) the last w <= truncation (masked) inputs, only when the kernel is truncated.
    """

    h: torch.Tensor
    window: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> EMAState:
        return EMAState(
            self.h.index_select(0, index),
            None if self.window is None else self.window.index_select(0, index),
        )


class MultiDimensionDampedEMA(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        ndim: int,
        bidirectional: bool = False,
        truncation: int | None = None,
        delta_alpha_range: float = 0.2,
        beta_range: float = 0.02,
        gamma_omega_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.ndim = ndim
        self.bidirectional = bidirectional
        self.truncation = truncation
        self.scale = math.sqrt(1.0 / ndim)
        self._init_ranges = (delta_alpha_range, beta_range, gamma_omega_range)
        kernel_dim = 2 * embed_dim if bidirectional else embed_dim
        self.damping_factor = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.decay_factor = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.ema_expansion_matrix = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.kernel_projection_matrix = nn.Parameter(torch.empty(kernel_dim, ndim))
        self.residual_weight = nn.Parameter(torch.empty(embed_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        delta_alpha_range, beta_range, gamma_omega_range = self._init_ranges
        nn.init.normal_(self.damping_factor, 0.0, delta_alpha_range)
        nn.init.normal_(self.decay_factor, 0.0, delta_alpha_range)
        signs = torch.ones(self.ndim, 1)
        signs[1::2] = -1.0  # +1, -1, +1, ... along N
        nn.init.normal_(self.ema_expansion_matrix, 0.0, beta_range)
        self.ema_expansion_matrix.add_(signs)
        nn.init.normal_(self.kernel_projection_matrix, 0.0, gamma_omega_range)
        nn.init.normal_(self.residual_weight, 0.0, gamma_omega_range)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, ndim={self.ndim}, bidirectional={self.bidirectional}, "
            f"truncation={self.truncation}"
        )

    # ----------------------------------------------------------------- kernel
    def coefficients(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """p = paper alpha and q = paper phi = 1 - alpha * delta, each (K_d, N, 1)."""
        p = torch.sigmoid(self.damping_factor.to(dtype))
        q = 1.0 - p * torch.sigmoid(self.decay_factor.to(dtype))
        return p, q

    def _input_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha*beta (K_d, N) and q (K_d, N)."""
        p, q = self.coefficients(dtype)
        return (p * self.ema_expansion_matrix.to(dtype)).squeeze(-1), q.squeeze(-1)

    def _output_weights(self, dtype: torch.dtype) -> torch.Tensor:
        """eta = gamma * sqrt(1/N), (K_d, N)."""
        return self.kernel_projection_matrix.to(dtype) * self.scale

    def kernel(self, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """K[d, l] = sum_n c[d, n] q[d, n]^l for l < length, shape (K_d, length).

        With l = s*a + b (s = ceil(sqrt(length)), b < s), q^l = q^(s a) * q^b, so K[d, s a + b]
        = sum_n (c q^(s a))[d, n, a] * (q^b)[d, n, b]: one batched (A, N) x (N, s) matmul per row
        instead of a (K_d, N, length) tensor of powers (16x less elementwise work at 1024 taps).
        """
        pb, q = self._input_weights(dtype)
        coef = pb * self._output_weights(dtype)  # (K_d, N)
        log_q = q.log().unsqueeze(-1)  # (K_d, N, 1)
        step = math.isqrt(max(length - 1, 0)) + 1
        blocks = -(-length // step)
        ar = torch.arange(max(step, blocks), device=q.device, dtype=dtype)
        outer = coef.unsqueeze(-1) * torch.exp(log_q * (ar[:blocks] * step))  # (K_d, N, A)
        inner = torch.exp(log_q * ar[:step])  # (K_d, N, s)
        with torch.autocast(q.device.type, enabled=False):  # a bf16 bmm would round K
            kern = torch.bmm(outer.transpose(1, 2), inner)  # (K_d, A, s)
        return kern.reshape(kern.size(0), blocks * step)[:, :length]

    def kernel_length(self, length: int) -> int:
        return length if self.truncation is None else min(self.truncation, length)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: EMAState | None = None,
        return_state: bool = False,
    ) -> tuple[torch.Tensor, EMAState | None]:
        """x: (B, L, D); attention_mask: (B, L), 1 = real. Returns SiLU(conv + omega x), state."""
        if (state is not None or return_state) and self.bidirectional:
            raise ValueError(
                "incremental decoding needs a unidirectional EMA (config.bidirectional=False)"
            )
        # the kernel (a bmm), the FFTs and the state stay in float32 (or float64) under autocast
        with torch.autocast(x.device.type, enabled=False):
            if state is not None:
                return self._steps(x, attention_mask, state)
            return self._convolve(x, attention_mask, return_state)

    def _convolve(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, return_state: bool
    ) -> tuple[torch.Tensor, EMAState | None]:
        batch, length, dim = x.shape
        cdtype = torch.promote_types(x.dtype, torch.float32)
        xc = x.to(cdtype)
        masked = xc if attention_mask is None else xc * attention_mask.unsqueeze(-1).to(cdtype)
        taps = self.kernel_length(length)
        kern = self.kernel(taps, cdtype)  # (K_d, k)
        n = fft_length(length + taps - 1)
        if self.bidirectional:
            # one circular kernel (D, n): forward taps at lags 0..k-1, backward taps at -1..-(k-1)
            # i.e. indices n-1..n-k+1 (n >= L + k - 1: no wrap onto real inputs); lag 0 twice
            fwd, bwd = kern[:dim], kern[dim:]
            gap = kern.new_zeros(dim, n - 2 * taps + 1)
            kern = torch.cat([fwd[:, :1] + bwd[:, :1], fwd[:, 1:], gap, bwd[:, 1:].flip(-1)], -1)
        kf = torch.fft.rfft(kern, n=n)  # (D, n//2+1)
        # FFTs along the last axis of a (B, D, L) view (pocketfft is faster on it than on dim 1)
        xf = torch.fft.rfft(masked.transpose(1, 2), n=n)  # (B, D, n//2+1)
        y = torch.fft.irfft(xf * kf, n=n)[..., :length].transpose(1, 2)  # (B, L, D) view
        out = F.silu(torch.addcmul(y, xc, self.residual_weight.to(cdtype))).to(x.dtype)
        new_state = self._state_from_sequence(masked) if return_state else None
        return out, new_state

    # ----------------------------------------------------------- decoding path
    def _state_from_sequence(self, masked: torch.Tensor) -> EMAState:
        """State after reading masked inputs (B, L, D) in compute dtype."""
        pb, q = self._input_weights(masked.dtype)
        window = masked if self.truncation is None else masked[:, -self.truncation :]
        w = window.size(1)
        ages = torch.arange(w - 1, -1, -1, device=masked.device, dtype=masked.dtype)
        powers = torch.exp(q.log().unsqueeze(-1) * ages)  # (D, N, w): q^(w-1-s)
        h = pb * torch.einsum("bsd,dns->bdn", window, powers)
        return EMAState(h, None if self.truncation is None else window.contiguous())

    def _steps(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, state: EMAState
    ) -> tuple[torch.Tensor, EMAState]:
        cdtype = state.h.dtype
        xc = x.to(cdtype)
        masked = xc if attention_mask is None else xc * attention_mask.unsqueeze(-1).to(cdtype)
        pb, q = self._input_weights(cdtype)  # (D, N)
        eta = self._output_weights(cdtype)
        forget = None if self.truncation is None else pb * q.pow(self.truncation)
        h, window = state.h, state.window
        outs = []
        for t in range(x.size(1)):
            xt = masked[:, t]  # (B, D)
            h = q * h + pb * xt.unsqueeze(-1)
            if window is not None:
                if window.size(1) == self.truncation:  # x_{t-k} leaves the window
                    h = h - forget * window[:, 0].unsqueeze(-1)
                    window = window[:, 1:]
                window = torch.cat([window, xt.unsqueeze(1)], dim=1)
            outs.append((h * eta).sum(-1))  # (B, D)
        y = torch.stack(outs, dim=1)
        out = F.silu(y + xc * self.residual_weight.to(cdtype)).to(x.dtype)
        return out, EMAState(h, window)

    def initial_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> EMAState:
        cdtype = torch.promote_types(dtype, torch.float32)
        h = torch.zeros(batch, self.embed_dim, self.ndim, dtype=cdtype, device=device)
        window = (
            None
            if self.truncation is None
            else torch.zeros(batch, 0, self.embed_dim, dtype=cdtype, device=device)
        )
        return EMAState(h, window)
