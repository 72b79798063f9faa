"""Luna (Ma et al. 2021) as a backbone: the post-LN encoder of fairseq-apollo's LRA Luna, each layer
a `LunaAttention` pack/unpack (mega_lra/layers/baselines/luna.py) that carries a second stream P of
l = `projected_length` slots beside the sequence X.

    X_0 = dropout(LN_e(x)), P_0 = dropout(LN_pe(P[:l'])), padded rows / masked slots zeroed
    per layer:  Y, C_p = LunaAttention(X, P)
                X_A = LN(X + dropout(Y)),   P' = LN_p(P + dropout(C_p))       (P has no FFN)
                X'  = LN(X_A + dropout(W_2 act_dropout(GELU(W_1 X_A))))

P is a learned (l, D) parameter ~ N(0, D^-1/2), shared by every sample. LN_e / LN_pe are the
embedding LayerNorms of the Luna-era LRA encoder (`layernorm_embedding`). With
`dynamic_projection` (Luna's default) P is cut to l' = min(l, longest true length in the batch)
and slot j of sample b is masked (as a key of the unpack, and zeroed at the start) when
j >= length_b; without it all l slots are used and none is masked. A sample's output therefore
depends only on its own tokens, never on the batch or on extra padding. Nothing is ever L x L: the
pack is (l, L), the unpack (L, l).

The stack ends with its own post-LN, so the model file sets `final_layernorm: false`. FFN Linears
keep PyTorch's default init (fairseq's, without `--apply-bert-init`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.baselines.luna import LunaAttention


class LunaLayer(nn.Module):
    """One post-LN Luna encoder layer: (X, P) -> (X', P')."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        ffn_hidden_size: int,
        dropout_prob: float,
        attention_dropout_prob: float,
        activation_dropout_prob: float,
        tie_kv: bool,
    ) -> None:
        super().__init__()
        self.attention = LunaAttention(
            hidden_size, num_attention_heads, attention_dropout_prob, tie_kv=tie_kv
        )
        self.attn_norm = nn.LayerNorm(hidden_size)  # LN
        self.packed_norm = nn.LayerNorm(hidden_size)  # LN_p
        self.fc1 = nn.Linear(hidden_size, ffn_hidden_size)
        self.fc2 = nn.Linear(ffn_hidden_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.dropout = dropout_prob
        self.activation_dropout = activation_dropout_prob

    def forward(
        self, x: torch.Tensor, p: torch.Tensor, mask: torch.Tensor, p_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, D), p (B, l, D), mask (B, L), p_mask (B, l) -> x', p' of the same shapes."""
        y, packed = self.attention(x, p, mask, p_mask)
        x = self.attn_norm(x + F.dropout(y, self.dropout, self.training))
        p = self.packed_norm(p + F.dropout(packed, self.dropout, self.training))
        hidden = F.dropout(F.gelu(self.fc1(x)), self.activation_dropout, self.training)
        x = self.ffn_norm(x + F.dropout(self.fc2(hidden), self.dropout, self.training))
        return x, p


class LunaBackbone(nn.Module):
    """Embeddings (B, L, D) + mask (B, L) -> hidden states (B, L, D). Defaults: the LRA Text size
    (4 layers, D 256, 4 heads, FFN 1024) with l = 256 (Luna-256)."""

    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        ffn_hidden_size: int = 1024,
        dropout_prob: float = 0.1,
        attention_dropout_prob: float = 0.1,
        activation_dropout_prob: float = 0.0,
        max_length: int | None = None,
        projected_length: int = 256,
        tie_kv: bool = False,
        dynamic_projection: bool = True,
        layernorm_embedding: bool = True,
    ) -> None:
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"model.hidden_size={hidden_size} is not a multiple of "
                f"model.num_attention_heads={num_attention_heads}"
            )
        if projected_length < 1:
            raise ValueError(f"model.projected_length={projected_length}: expected >= 1")
        if num_hidden_layers < 1:
            raise ValueError(f"model.num_hidden_layers={num_hidden_layers}: expected >= 1")
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.dropout_prob = dropout_prob
        self.max_length = max_length
        self.projected_length = projected_length
        self.tie_kv = tie_kv
        self.dynamic_projection = dynamic_projection
        # P: (l, D) ~ N(0, D^-1/2)
        self.projected_embeddings = nn.Parameter(
            torch.randn(projected_length, hidden_size) * hidden_size**-0.5
        )
        self.embed_norm = nn.LayerNorm(hidden_size) if layernorm_embedding else None
        self.projected_norm = nn.LayerNorm(hidden_size) if layernorm_embedding else None
        self.layers = nn.ModuleList(
            LunaLayer(
                hidden_size,
                num_attention_heads,
                ffn_hidden_size,
                dropout_prob,
                attention_dropout_prob,
                activation_dropout_prob,
                tie_kv,
            )
            for _ in range(num_hidden_layers)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "mixer": "luna",
            "attention_activation": "softmax",
            "normalization_type": "layernorm",
            "prenorm": False,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": len(self.layers),
            "projected_length": self.projected_length,
            "tie_kv": self.tie_kv,
            "dynamic_projection": self.dynamic_projection,
            "layernorm_embedding": self.embed_norm is not None,
        }

    def projected_inputs(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P[:l'] (l', D) and its slot mask (B, l') for the true lengths of `mask` (B, L)."""
        if not self.dynamic_projection:
            slots = self.projected_length
            return self.projected_embeddings, mask.new_ones(mask.size(0), slots)
        lengths = mask.sum(1)  # (B,)
        slots = max(1, min(self.projected_length, int(lengths.max())))
        p_mask = torch.arange(slots, device=mask.device)[None, :] < lengths[:, None]  # (B, l')
        return self.projected_embeddings[:slots], p_mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) embeddings (positions already added), mask (B, L) bool -> (B, L, D)."""
        length = x.size(1)
        if self.max_length is not None and length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        keep = mask.to(torch.bool)
        p, p_mask = self.projected_inputs(keep)  # (l', D), (B, l')
        if self.embed_norm is not None:
            x, p = self.embed_norm(x), self.projected_norm(p)
        p = p.unsqueeze(0).expand(x.size(0), -1, -1)  # (B, l', D)
        zero_x = keep.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = F.dropout(x, self.dropout_prob, self.training) * zero_x
        p = F.dropout(p, self.dropout_prob, self.training) * p_mask.unsqueeze(-1).to(p.dtype)
        for layer in self.layers:
            x, p = layer(x, p, keep, p_mask)
        return x * zero_x
