"""Linformer (Wang et al. 2020) on LRA's pre-LN encoder stack: every block's self-attention is
`LowRankAttention` (keys and values projected along the sequence axis to `projected_length` rows;
mega_lra/layers/baselines/low_rank.py). LRA runs k = 16 on every task (its Text override of 32 never
reached the model) with one projection per layer shared by K, V and the heads (`share_kv: true`).

The projection has one row per position, so the backbone needs the task's `max_length`; inputs
longer than it are one error. Padding is masked (padded K/V rows contribute nothing) unless
`lra_quirks: true`, which reproduces LRA's unmasked projection (padded tokens mixed into K' and V').
"""

from __future__ import annotations

from mega_lra.layers.baselines.low_rank import LowRankAttention
from mega_lra.models.prenorm_stack import PreLNStack


class LinformerBackbone(PreLNStack):
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
        projected_length: int = 16,
        share_kv: bool = True,
        lra_quirks: bool = False,
    ) -> None:
        if not max_length:
            raise ValueError(
                "model=linformer needs the task's max_length (its length projection has one row "
                f"per position); got max_length={max_length!r}"
            )
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: LowRankAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                projected_length=projected_length,
                share_kv=share_kv,
                mask_padding=not lra_quirks,
            ),
            info={
                "mixer": "linformer",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "projected_length": projected_length,
                "share_kv": share_kv,
                "lra_quirks": lra_quirks,
            },
        )
