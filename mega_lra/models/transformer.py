"""The Transformer baseline of Mega's LRA tables (XFM‡; transformer_baselines.md §4): fairseq's
LRA encoder stack of post-LN `TransformerSentenceEncoderLayer`s, as a backbone of the one LRA
classifier. Its embedding differs from Mega's and is set in its model file as encoder options:
tokens N(0, 0.02) times sqrt(d), plus sinusoidal positions (`mega_lra.models.encoders`).

    x_0 = dropout(embeddings), padded positions zeroed
    a   = LN(x + dropout(MHA(x)))                     post-LN (fairseq's default)
    x'  = LN(a + dropout(W_2 act_dropout(GELU(W_1 a))))

MHA is multi-head softmax(Q K^T / sqrt(d_head)) V through `F.scaled_dot_product_attention`,
padded keys masked out (never a pixel of value 0). Linear weights are N(0, 0.02) with zero
biases (fairseq's `init_bert_params`). Field names: d = `hidden_size`, layers =
`num_hidden_layers`, heads = `num_attention_heads`, FFN width = `ffn_hidden_size`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TransformerLayer(nn.Module):
    """One post-LN encoder layer (fairseq `TransformerSentenceEncoderLayer`)."""

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        ffn_hidden_size: int,
        dropout_prob: float,
        attention_dropout_prob: float,
        activation_dropout_prob: float,
        layer_norm_eps: float,
    ) -> None:
        super().__init__()
        d = hidden_size
        self.num_heads = num_attention_heads
        self.qkv_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=layer_norm_eps)
        self.fc1 = nn.Linear(d, ffn_hidden_size)
        self.fc2 = nn.Linear(ffn_hidden_size, d)
        self.ffn_norm = nn.LayerNorm(d, eps=layer_norm_eps)
        self.dropout = dropout_prob
        self.attention_dropout = attention_dropout_prob
        self.activation_dropout = activation_dropout_prob

    def attention(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, d), key_mask (B, 1, 1, L) bool (True = attend) -> (B, L, d)."""
        batch, length, d = x.shape
        qkv = self.qkv_proj(x).view(batch, length, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, d_head)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return self.out_proj(o.transpose(1, 2).reshape(batch, length, d))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        drop = self.dropout if self.training else 0.0
        x = self.attn_norm(x + F.dropout(self.attention(x, key_mask), drop, self.training))
        hidden = F.gelu(self.fc1(x))  # (B, L, F)
        hidden = F.dropout(hidden, self.activation_dropout, self.training)
        return self.ffn_norm(x + F.dropout(self.fc2(hidden), drop, self.training))


class TransformerBackbone(nn.Module):
    """Embeddings (B, L, d) + mask (B, L) -> hidden states (B, L, d): dropout, zeroed padding,
    then the layers. Defaults: the LRA Text size (4 layers, d 256, 4 heads, FFN 1024)."""

    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        ffn_hidden_size: int = 1024,
        dropout_prob: float = 0.1,
        attention_dropout_prob: float = 0.1,
        activation_dropout_prob: float = 0.0,
        tie_layer_weights: bool = False,
        layer_norm_eps: float = 1e-5,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"model.hidden_size={hidden_size} is not a multiple of "
                f"model.num_attention_heads={num_attention_heads}"
            )
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.dropout_prob = dropout_prob
        self.max_length = max_length
        self.tie_layer_weights = tie_layer_weights

        def layer() -> TransformerLayer:
            return TransformerLayer(
                hidden_size,
                num_attention_heads,
                ffn_hidden_size,
                dropout_prob,
                attention_dropout_prob,
                activation_dropout_prob,
                layer_norm_eps,
            )

        if tie_layer_weights:  # fairseq's tie_layer_weights: one layer applied n times
            self.layers = nn.ModuleList([layer()] * num_hidden_layers)
        else:
            self.layers = nn.ModuleList(layer() for _ in range(num_hidden_layers))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fairseq's `init_bert_params`: Linear weights N(0, 0.02), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def describe(self) -> dict[str, Any]:
        return {
            "mixer": "transformer",
            "attention_activation": "softmax",
            "chunk_size": -1,  # full attention
            "normalization_type": "layernorm",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": len(self.layers),
            "tie_layer_weights": self.tie_layer_weights,
        }

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d) embeddings (positions already added), mask (B, L) bool -> (B, L, d)."""
        length = x.size(1)
        if self.max_length is not None and length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        keep = mask.to(torch.bool)
        # no padding (images): no mask, so SDPA may take a fused (flash) kernel
        key_mask = None if bool(keep.all()) else keep[:, None, None, :]  # (B, 1, 1, L)
        x = F.dropout(x, self.dropout_prob, self.training)
        x = x * keep.unsqueeze(-1).to(x.dtype)  # fairseq zeroes padded positions here
        for layer in self.layers:
            x = layer(x, key_mask)
        return x
