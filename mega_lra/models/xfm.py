"""LRA's own Transformer (`xfm`; reference/transformer_baselines.md §1-2): pre-LN blocks of full
softmax attention with bias-free Q/K/V/out of width `qkv_size`, a GELU MLP of width
`ffn_hidden_size`, a final LayerNorm. The model of LRA Table 1's "Transformer" row, with LRA's
per-task sizes in its recipes (`experiment=lra/xfm/<task>`); beside it, `transformer` is Mega's
XFM‡ (fairseq's post-LN encoder).
"""

from __future__ import annotations

from mega_lra.layers.baselines.softmax import SoftmaxAttention
from mega_lra.models.prenorm_stack import PreLNStack


class XFMBackbone(PreLNStack):
    quadratic = True  # cost grows as L^2: full softmax attention

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
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: SoftmaxAttention(
                hidden_size, num_attention_heads, qkv_size, attention_dropout_prob, max_length
            ),
            info={
                "mixer": "softmax_attention",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
            },
        )
