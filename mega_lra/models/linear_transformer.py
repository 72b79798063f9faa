"""Linear Transformer (LRA Table 1's "Linear Transformer"; Katharopoulos et al. 2020): LRA's
pre-LN blocks with linear attention, phi = elu + 1 (mega_lra/layers/baselines/linear.py), O(L d^2).
`lra_quirks: true` is LRA's code: padded keys left in the sums.
"""

from __future__ import annotations

from mega_lra.layers.baselines.linear import LinearAttention
from mega_lra.models.prenorm_stack import PreLNStack


class LinearTransformerBackbone(PreLNStack):
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
        lra_quirks: bool = False,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: LinearAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                lra_quirks=lra_quirks,
            ),
            info={
                "mixer": "linear_attention",
                "attention_activation": "elu+1",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "lra_quirks": bool(lra_quirks),
            },
        )
