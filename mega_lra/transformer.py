"""The Transformer baseline of Mega's LRA tables (XFM‡; transformer_baselines.md §4): fairseq's
LRA encoder with post-LN `TransformerSentenceEncoderLayer`s.

    x_0 = sqrt(d) * E[tokens] + P[positions]          sinusoidal P, padded positions get 0
    a   = LN(x + dropout(MHA(x)))                     post-LN (fairseq's default)
    x'  = LN(a + dropout(W_2 act_dropout(GELU(W_1 a))))

MHA is multi-head softmax(Q K^T / sqrt(d_head)) V through `F.scaled_dot_product_attention`
(padded keys masked out). Positions follow fairseq's `make_positions`: real tokens are numbered
padding_idx + 1, padding_idx + 2, ... in order, padding keeps padding_idx, whose sinusoid is zero.
The sinusoid is fairseq's: sin over the first d/2 features, cos over the rest, frequencies
exp(-i * ln(10000) / (d/2 - 1)).

`TransformerConfig()` is the LRA Text size (4 layers, d = 256, 4 heads, FFN 1024, max positions
4002); the task head (Linear -> dropout -> GELU -> bias-free Linear on the pooled or CLS vector)
lives with the task, as for Mega.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    vocab_size: int = 260
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    ffn_hidden_size: int = 1024
    max_positions: int = 4002
    dropout_prob: float = 0.1
    attention_dropout_prob: float = 0.1
    activation_dropout_prob: float = 0.0
    pad_token_id: int = 1
    scale_embedding: bool = True
    tie_layer_weights: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even for sinusoids, got {self.hidden_size}")


def sinusoidal_embedding(positions: torch.Tensor, dim: int, padding_idx: int) -> torch.Tensor:
    """fairseq's sinusoid for integer positions (...,) -> (..., dim); zero at padding_idx."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * -step)
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs  # (..., d/2)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return emb.masked_fill((positions == padding_idx).unsqueeze(-1), 0.0)


class TransformerLayer(nn.Module):
    """One post-LN encoder layer (fairseq `TransformerSentenceEncoderLayer`)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.qkv_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(d, config.ffn_hidden_size)
        self.fc2 = nn.Linear(config.ffn_hidden_size, d)
        self.ffn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = config.dropout_prob
        self.attention_dropout = config.attention_dropout_prob
        self.activation_dropout = config.activation_dropout_prob

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


class TransformerStack(nn.Module):
    """Embeddings (B, L, d) -> hidden states (B, L, d): sinusoidal positions, dropout, zeroed
    padding, then the layers. The LRA classifier feeds it its own input encoder's output."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        if config.tie_layer_weights:  # fairseq's tie_layer_weights: one layer applied n times
            layer = TransformerLayer(config)
            self.layers = nn.ModuleList([layer] * config.num_hidden_layers)
        else:
            self.layers = nn.ModuleList(
                TransformerLayer(config) for _ in range(config.num_hidden_layers)
            )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fairseq's `init_bert_params`: Linear and Embedding N(0, 0.02), zero bias, zero pad."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, d) embeddings (already scaled); attention_mask: (B, L), 1 = keep."""
        length = x.size(1)
        if length > self.config.max_positions:
            raise ValueError(
                f"sequence length {length} exceeds max_positions {self.config.max_positions}"
            )
        pad = self.config.pad_token_id
        if attention_mask is None:
            positions = torch.arange(length, device=x.device) + pad + 1  # (L,)
            key_mask = None
        else:
            keep = attention_mask.to(torch.bool)
            positions = torch.where(keep, keep.long().cumsum(dim=1) + pad, pad)  # (B, L)
            # no padding (images): no mask, so SDPA may take a fused (flash) kernel
            key_mask = None if bool(keep.all()) else keep[:, None, None, :]  # (B, 1, 1, L)
        x = x + sinusoidal_embedding(positions, x.size(-1), pad).to(x.dtype)
        x = F.dropout(x, self.config.dropout_prob, self.training)
        if attention_mask is not None:
            x = x * keep.unsqueeze(-1).to(x.dtype)  # fairseq zeroes padded positions here
        for layer in self.layers:
            x = layer(x, key_mask)
        return x


class TransformerEncoder(TransformerStack):
    """Token ids (B, L) -> hidden states (B, L, d); `attention_mask` (B, L) with 1 = keep."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.reset_parameters()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.embed_scale * self.embed_tokens(input_ids)
        return super().forward(x, attention_mask)
