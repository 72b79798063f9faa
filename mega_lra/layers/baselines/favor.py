"""Performer attention (Choromanski et al. 2021, "Rethinking Attention with Performers"): softmax
attention approximated through feature maps phi, linear in L:

    y_i = phi(q_i)^T S / R_i,   S = sum_j phi(k_j) v_j^T,   R_i = phi(q_i)^T sum_j phi(k_j)

on each head's q, k, v (width d = qkv_size / h; bias-free Xavier Q/K/V/out). Two feature maps
(`kernel`):

- `relu` (LRA's default "generalized" attention, deterministic): phi(x) = ReLU(x) + 1e-3, no
  random projection, no d^-1/4 scaling; `num_random_features` is unused.
- `softmax` (FAVOR+, the paper's positive orthogonal random features, its eq. of Lemma 1): with
  x^ = d^-1/4 x and W (m x d, `projection`) Gaussian-orthogonal (QR blocks of d rows, each row
  rescaled to the norm of an independent Gaussian row),
      phi(x) = m^-1/2 (exp(W x^ - |x^|^2 / 2 - c) + 1e-6),
  c = the stabilising max of W x^: over features for a query, over features and (real) positions
  for the keys of one head. m = `num_random_features`.

The denominator is stabilised as LRA's is, R + 2e-6 [|R| <= 1e-6] (for `relu` LRA has none; on a
row with a real key R >= d * 1e-6 there, so it only guards all-padding rows). The features and
sums run in at least float32, autocast or not.

Padding: padded keys get phi(k_j) = 0 (and stay out of the keys' max), so they add nothing to S or
R. Redraw (`feature_redraw_interval` = n): in training, W is redrawn from the global generator
after every n forward calls (the paper's periodic redraw; performer-pytorch's default n = 1000);
0 never redraws. Evaluation uses the stored W (a buffer, so checkpoints keep it). `lra_quirks=True`
is LRA's code instead: no padding mask, and (softmax) W redrawn on every call, training and
evaluation alike, from a generator seeded with ceil(sum(Q) * 1e7) (LRA's seed rule; torch's
generator, so not LRA's draws).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.linear import full_precision, kernel_readout, kernel_sums
from mega_lra.layers.baselines.projections import HeadProjections

KERNELS = ("relu", "softmax")
RELU_EPS = 1e-3  # LRA's kernel_epsilon for the generalized (ReLU) features
SOFTMAX_EPS = 1e-6  # FAVOR+'s feature epsilon and the denominator stabiliser


def gaussian_orthogonal_matrix(
    num_features: int, head_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """W (m, d), float64 on the CPU: ceil(m / d) blocks of d orthonormal rows (QR of a Gaussian
    d x d matrix), cut to m rows, row i rescaled to the norm of an independent N(0, I_d) draw."""
    blocks = []
    for _ in range(-(-num_features // head_size)):
        gaussian = torch.randn(head_size, head_size, generator=generator, dtype=torch.float64)
        orthonormal, _ = torch.linalg.qr(gaussian)
        blocks.append(orthonormal.T)
    rows = torch.cat(blocks)[:num_features]  # (m, d), unit rows
    norms = torch.randn(num_features, head_size, generator=generator, dtype=torch.float64)
    return norms.norm(dim=1, keepdim=True) * rows


def relu_features(x: torch.Tensor) -> torch.Tensor:
    """LRA's deterministic generalized features: (B, h, L, d) -> (B, h, L, d)."""
    return F.relu(x) + RELU_EPS


def softmax_features(
    x: torch.Tensor, projection: torch.Tensor, keep: torch.Tensor | None, *, is_query: bool
) -> torch.Tensor:
    """FAVOR+ positive features (B, h, L, d) -> (B, h, L, m), with W = `projection` (m, d).
    For keys (`is_query=False`) the max runs over features and the positions where `keep`
    (B, L) is True, and the features of the others are exactly 0."""
    num_features, head_size = projection.shape
    x = x * head_size**-0.25
    logits = torch.einsum("bhld,md->bhlm", x, projection)  # W x^
    half_norm = x.square().sum(dim=-1, keepdim=True) / 2  # |x^|^2 / 2, (B, h, L, 1)
    if is_query:
        shift = logits.amax(dim=-1, keepdim=True)  # (B, h, L, 1)
    else:
        if keep is not None:
            logits = logits.masked_fill(~keep[:, None, :, None], -math.inf)
        shift = logits.amax(dim=(-2, -1), keepdim=True)  # (B, h, 1, 1)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    features = torch.exp(logits - half_norm - shift) + SOFTMAX_EPS
    if keep is not None and not is_query:
        features = features * keep[:, None, :, None].to(features.dtype)
    return features * num_features**-0.5


def stabilised(denominator: torch.Tensor) -> torch.Tensor:
    """R + 2 eps [|R| <= eps] (LRA's renormalisation guard)."""
    small = (denominator.abs() <= SOFTMAX_EPS).to(denominator.dtype)
    return denominator + 2 * SOFTMAX_EPS * small


class FavorAttention(nn.Module):
    """x (B, L, D), mask (B, L) -> (B, L, D). `attention_dropout_prob` and `max_length` are
    accepted for the shared interface and unused: there is no attention matrix to drop (LRA's
    Performer has no attention dropout either)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float = 0.0,
        max_length: int | None = None,
        *,
        kernel: str = "relu",
        num_random_features: int = 256,
        feature_redraw_interval: int = 1000,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"model.kernel={kernel!r}: expected one of {', '.join(KERNELS)}")
        if int(num_random_features) < 1:
            raise ValueError(f"model.num_random_features={num_random_features}: expected >= 1")
        if int(feature_redraw_interval) < 0:
            raise ValueError(
                f"model.feature_redraw_interval={feature_redraw_interval}: expected >= 0 "
                "(0 = never redraw)"
            )
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.kernel = kernel
        self.num_random_features = int(num_random_features)
        self.feature_redraw_interval = int(feature_redraw_interval)
        self.lra_quirks = bool(lra_quirks)
        if kernel == "softmax":
            w = gaussian_orthogonal_matrix(self.num_random_features, self.proj.head_size)
            self.register_buffer("projection", w.float())  # W (m, d)
            self.register_buffer("calls_since_redraw", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draws a fresh W into `projection` (from the global CPU generator by default)."""
        w = gaussian_orthogonal_matrix(self.num_random_features, self.proj.head_size, generator)
        self.projection.copy_(w)
        self.calls_since_redraw.zero_()

    def _projection_for(self, q: torch.Tensor) -> torch.Tensor:
        """The W this call uses (redrawn first where the policy says so), in q's dtype."""
        if self.lra_quirks:  # LRA: a fresh W every call, seeded by the data
            seed = math.ceil(float(q.detach().float().sum()) * 1e7) % 2**63
            generator = torch.Generator().manual_seed(seed)
            w = gaussian_orthogonal_matrix(self.num_random_features, q.size(-1), generator)
            return w.to(device=q.device, dtype=q.dtype)
        if self.training and self.feature_redraw_interval:
            if int(self.calls_since_redraw) >= self.feature_redraw_interval:
                self.redraw()
            self.calls_since_redraw += 1
        return self.projection.to(q.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        q, k, v = self.proj.queries(x), self.proj.keys(x), self.proj.values(x)  # (B, h, L, d)
        keep = None if self.lra_quirks else mask.to(torch.bool)
        with torch.autocast(x.device.type, enabled=False):
            q, k, v32 = full_precision(q, k, v)
            if self.kernel == "relu":
                phi_q, phi_k = relu_features(q), relu_features(k)  # (B, h, L, d)
            else:
                w = self._projection_for(q)
                phi_q = softmax_features(q, w, None, is_query=True)  # (B, h, L, m)
                phi_k = softmax_features(k, w, keep, is_query=False)
            sums, normaliser = kernel_sums(phi_k, v32, keep)  # (B, h, m, d), (B, h, m)
            numerator, denominator = kernel_readout(phi_q, sums, normaliser)
            y = numerator / stabilised(denominator).unsqueeze(-1)  # (B, h, L, d)
        return self.proj.output(y.to(v.dtype))
