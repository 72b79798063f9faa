"""Longformer (LRA Table 1's "Longformer") on LRA's pre-LN encoder stack: every block's
self-attention is `SlidingWindowAttention` (mega_lra/layers/baselines/sliding_window.py), the
sliding window as LRA uses it (w = `window_size`, 512 on every task: 256 keys on the left
including the query, 256 on the right), with no global tokens (LRA sets none on any task),
computed in banded query chunks, never L x L. Padded keys are masked.
"""

from __future__ import annotations

from mega_lra.layers.baselines.sliding_window import SlidingWindowAttention
from mega_lra.models.prenorm_stack import PreLNStack


class LongformerBackbone(PreLNStack):
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
        window_size: int = 512,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: SlidingWindowAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                window_size=window_size,
            ),
            info={
                "mixer": "longformer",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "window_size": window_size,
                "global_tokens": 0,
            },
        )
