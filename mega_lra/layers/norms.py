"""Sequence normalisation layers used by Mega (original `sequence_norm.py`; paper §3.3, App. A).

`SequenceNorm(kind, dim)` wraps one of:
- `layernorm`: mean/variance over features, affine weight and bias;
- `scalenorm`: y = g * x / sqrt(mean(x^2) + eps) with one learned scalar g (attribute `scalar`);
- `rmsnorm`: the same with a per-feature weight (a real RMSNorm; HF's `MegaRMSNorm` forgets to
  normalise and returns x * weight, reproducible here with `hf_compat=True` for HF checkpoints);
- `batchnorm` / `syncbatchnorm`: statistics over batch and time of a (B, L, D) input (and over all
  processes for syncbatchnorm). The original counts padded positions in the statistics;
  `exclude_padding=True` leaves them out.
All use eps = 1e-5. The wrapped module is the attribute `norm`, so parameters are named
`norm.norm.<param>` inside a Mega layer, as in HF's state dicts.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class ScaleNorm(nn.Module):
    """x * scalar / sqrt(mean(x^2, last dim) + eps); one learned scalar (init 1)."""

    def __init__(self, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        # scale the (..., 1) factor, not x: the backward then keeps no normalised copy of x
        return x * (factor * self.scalar if self.scalar is not None else factor)


class RMSNorm(nn.Module):
    """x * weight / sqrt(mean(x^2, last dim) + eps); per-feature weight (init 1).

    `hf_compat=True` reproduces HF's MegaRMSNorm, whose output is `x * weight` (the normalising
    factor is computed and discarded): only for reproducing outputs of HF rmsnorm checkpoints.
    """

    def __init__(
        self, dim: int, eps: float = 1e-5, affine: bool = True, hf_compat: bool = False
    ) -> None:
        super().__init__()
        self.eps = eps
        self.hf_compat = hf_compat
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.hf_compat else x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return y * self.weight if self.weight is not None else y


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each input is the summed gradient (SyncBN's rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over (batch, time) of a (B, L, D) input with padded positions excluded.

    Holds the same parameters and buffers as `nn.BatchNorm1d(D)` (weight, bias, running_mean,
    running_var, num_batches_tracked), so checkpoints are interchangeable. With `sync=True` the
    statistics are summed over all processes of the default group (SyncBatchNorm semantics).
    """

    def __init__(self, *args, sync: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sync = sync

    def forward_masked(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if not self.training:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, L, D) <-> (B, D, L)
        keep = (
            torch.ones_like(x[..., :1]) if mask is None else mask.to(x.dtype).unsqueeze(-1)
        )  # (B, L, 1)
        # [count, sum x, sum x^2] over real positions, summed across processes when syncing
        stats = torch.cat(
            [keep.sum().reshape(1), (x * keep).sum(dim=(0, 1)), (x * x * keep).sum(dim=(0, 1))]
        )
        if self.sync and dist.is_available() and dist.is_initialized():
            stats = _AllReduceSum.apply(stats)
        dim = x.size(-1)
        count = stats[0].clamp(min=1.0)
        mean = stats[1 : 1 + dim] / count  # (D,)
        var = (stats[1 + dim :] / count - mean * mean).clamp(min=0.0)  # biased, to normalise
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var * count / (count - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


class SequenceNorm(nn.Module):
    """Normalise a (B, L, D) sequence with the chosen kind; the module itself is `self.norm`."""

    def __init__(
        self,
        kind: str,
        dim: int,
        eps: float = 1e-5,
        affine: bool = True,
        exclude_padding: bool = False,
        rmsnorm_hf_compat: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.exclude_padding = exclude_padding
        if kind == "layernorm":
            self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        elif kind == "scalenorm":
            self.norm = ScaleNorm(eps=eps, affine=affine)
        elif kind == "rmsnorm":
            self.norm = RMSNorm(dim, eps=eps, affine=affine, hf_compat=rmsnorm_hf_compat)
        elif kind == "batchnorm":
            self.norm = MaskedBatchNorm(dim, eps=eps, affine=affine)
        elif kind == "syncbatchnorm" and exclude_padding:
            self.norm = MaskedBatchNorm(dim, eps=eps, affine=affine, sync=True)
        elif kind == "syncbatchnorm":
            self.norm = nn.SyncBatchNorm(dim, eps=eps, affine=affine)
        else:
            raise ValueError(
                f"normalization type {kind!r}: expected layernorm, scalenorm, rmsnorm, "
                "batchnorm or syncbatchnorm"
            )

    @classmethod
    def from_config(cls, config) -> SequenceNorm:
        """The norm a Mega sub-layer of `config` (a MegaConfig) uses, over hidden_size features."""
        return cls(
            config.normalization_type,
            config.hidden_size,
            eps=config.norm_eps,
            affine=config.norm_affine,
            exclude_padding=config.norm_exclude_padding,
            rmsnorm_hf_compat=config.rmsnorm_hf_compat,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) with 1 = real token (only batchnorm looks at it)."""
        if isinstance(self.norm, MaskedBatchNorm):
            return self.norm.forward_masked(x, mask if self.exclude_padding else None)
        if self.kind == "syncbatchnorm":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)
