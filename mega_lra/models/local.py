"""Local attention (LRA Table 1's "Local Attention") on LRA's pre-LN encoder stack: every block's
self-attention is `LocalAttention` (mega_lra/layers/baselines/local.py), softmax attention inside
non-overlapping blocks of w = `window_size` tokens (LRA's `block_size`: 50 on the text tasks, 64
on the image tasks), padded inside and masked.

`lra_quirks: true` computes LRA's code as written: strided groups {t mod n + i n} instead of
contiguous blocks, the padding mask laid on contiguous chunks (misaligned with the groups), and
w - L mod w padding tokens counted as real.
"""

from __future__ import annotations

from mega_lra.layers.baselines.local import LocalAttention
from mega_lra.models.prenorm_stack import PreLNStack


class LocalBackbone(PreLNStack):
    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        qkv_size: int | None = None,
        ffn_hidden_size: int = 1024,
        dropout_prob: float = 0.1,
        attention_dropout_prob: float = 0.1,
        max_length: int | None = None,
        window_size: int = 50,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: LocalAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                window_size=window_size,
                lra_quirks=lra_quirks,
            ),
            info={
                "mixer": "local_attention",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "window_size": window_size,
                "lra_quirks": lra_quirks,
            },
        )
