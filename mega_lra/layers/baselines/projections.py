"""The query/key/value/output projections every LRA baseline shares, and the head reshapes.

LRA's attention modules (flax `MultiHeadDotProductAttention` and its forks) map the model width D
to `qkv_size` = h * d for each of Q, K and V, split it over h heads of width d, and map the merged
heads back to D; all four are bias-free (`bias=False`) with Xavier-uniform kernels
(reference/lra_baselines.md §0.1).
"""

from __future__ import annotations

import torch
from torch import nn


def head_size(qkv_size: int, num_heads: int) -> int:
    """d = qkv_size / h, or one clear error."""
    if qkv_size % num_heads:
        raise ValueError(
            f"model.qkv_size={qkv_size} is not a multiple of model.num_attention_heads={num_heads}"
        )
    return qkv_size // num_heads


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, h * d) -> (B, h, L, d)."""
    b, length, width = x.shape
    return x.view(b, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, L, d) -> (B, L, h * d)."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    """A bias-free Linear with a Xavier-uniform weight (LRA's Dense kernel_init)."""
    layer = nn.Linear(in_features, out_features, bias=False)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class HeadProjections(nn.Module):
    """W_Q, W_K, W_V: D -> h * d and W_O: h * d -> D, bias-free, Xavier-uniform.

    `queries/keys/values(x)` give (B, h, L, d); `output(y)` takes (B, h, L, d) -> (B, L, D).
    `keys=False` / `values=False` / `output=False` leave that projection out (e.g. Reformer's shared
    QK and missing output projection)."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        qkv_size: int | None = None,
        *,
        keys: bool = True,
        values: bool = True,
        output: bool = True,
    ) -> None:
        super().__init__()
        qkv_size = qkv_size or hidden_size
        self.num_heads = num_heads
        self.head_size = head_size(qkv_size, num_heads)
        self.qkv_size = qkv_size
        self.query = xavier_linear(hidden_size, qkv_size)
        self.key = xavier_linear(hidden_size, qkv_size) if keys else None
        self.value = xavier_linear(hidden_size, qkv_size) if values else None
        self.out = xavier_linear(qkv_size, hidden_size) if output else None

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads(self.query(x), self.num_heads)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads((self.key or self.query)(x), self.num_heads)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("these projections have no W_V")
        return split_heads(self.value(x), self.num_heads)

    def output(self, y: torch.Tensor) -> torch.Tensor:
        merged = merge_heads(y)
        return merged if self.out is None else self.out(merged)


def pad_to_multiple(
    x: torch.Tensor, mask: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Right-pads x (B, L, ...) and mask (B, L) to a multiple of `multiple` (padding = masked
    out); returns them and the original L, to cut the output back with `y[:, :L]`."""
    length = x.size(1)
    extra = (-length) % multiple
    if extra:
        x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, extra))
        mask = torch.nn.functional.pad(mask, (0, extra), value=False)
    return x, mask, length
