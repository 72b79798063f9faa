"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", eq. 4-6), non-causal:

    y_i = phi(q_i)^T S / (phi(q_i)^T z + eps),   S = sum_j phi(k_j) v_j^T,   z = sum_j phi(k_j)

with phi(x) = elu(x) + 1 applied to each head's q, k (width d = qkv_size / h), eps = 1e-6, no
1/sqrt(d) scaling, bias-free Xavier Q/K/V/out (LRA `linear_transformer/linear_attention.py`). The
sums S (d x d) and z (d) cost O(L d^2); no L x L matrix is formed. Padded keys get phi(k_j) = 0,
so they add nothing to S or z; `lra_quirks=True` leaves them in, as LRA's code does.

`kernel_sums` / `kernel_readout` are the shared core of every feature-map attention here (the
Performer in favor.py uses them with its own features and denominator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.projections import HeadProjections

EPS = 1e-6


def kernel_sums(
    phi_k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """S = sum_j phi(k_j) v_j^T (B, h, m, d) and z = sum_j phi(k_j) (B, h, m) from phi_k
    (B, h, L, m) and v (B, h, L, d); keys where `keep` (B, L) is False are left out."""
    if keep is not None:
        phi_k = phi_k * keep[:, None, :, None].to(phi_k.dtype)
    return torch.einsum("bhlm,bhld->bhmd", phi_k, v), phi_k.sum(dim=2)


def kernel_readout(
    phi_q: torch.Tensor, sums: torch.Tensor, normaliser: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator phi(q_i)^T S (B, h, L, d) and denominator phi(q_i)^T z (B, h, L)."""
    numerator = torch.einsum("bhlm,bhmd->bhld", phi_q, sums)
    denominator = torch.einsum("bhlm,bhm->bhl", phi_q, normaliser)
    return numerator, denominator


def full_precision(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in at least float32 (half-precision sums over L lose the small terms); call
    inside `torch.autocast(..., enabled=False)`."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


class LinearAttention(nn.Module):
    """x (B, L, D), mask (B, L) -> (B, L, D). `attention_dropout_prob` and `max_length` are
    accepted for the shared interface and unused: there is no attention matrix to drop (LRA has
    no dropout here either) and no length-dependent parameter."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        qkv_size: int | None,
        attention_dropout_prob: float = 0.0,
        max_length: int | None = None,
        *,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__()
        self.proj = HeadProjections(hidden_size, num_attention_heads, qkv_size)
        self.lra_quirks = bool(lra_quirks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), mask (B, L) bool (True = real token) -> (B, L, D)."""
        q, k, v = self.proj.queries(x), self.proj.keys(x), self.proj.values(x)  # (B, h, L, d)
        keep = None if self.lra_quirks else mask.to(torch.bool)
        with torch.autocast(x.device.type, enabled=False):
            q, k, v32 = full_precision(q, k, v)
            sums, normaliser = kernel_sums(elu_feature_map(k), v32, keep)  # (B,h,d,d), (B,h,d)
            numerator, denominator = kernel_readout(elu_feature_map(q), sums, normaliser)
            y = numerator / (denominator + EPS).unsqueeze(-1)  # (B, h, L, d)
        return self.proj.output(y.to(v.dtype))
