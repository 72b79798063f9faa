"""The Sparse Transformer of LRA Table 1 (Child et al. 2019, fixed pattern): LRA's pre-LN block
stack (`PreLNStack`) with `FixedSparseAttention` (mega_lra/layers/baselines/fixed_sparse.py):
each query attends to its own block of `block_size` tokens and to the last
`num_summary_columns` tokens of every block, computed in blocks. `lra_quirks: true` gives the
mask LRA's code builds (an extra summary column at each block start, AND-ed with causal).
"""

from __future__ import annotations

from mega_lra.layers.baselines.fixed_sparse import FixedSparseAttention
from mega_lra.models.prenorm_stack import PreLNStack


class SparseTransformerBackbone(PreLNStack):
    quadratic = True  # cost grows as L^2: the fixed pattern holds about L^2 c / l pairs

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
        block_size: int = 50,
        num_summary_columns: int = 10,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: FixedSparseAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                block_size=block_size,
                num_summary_columns=num_summary_columns,
                lra_quirks=lra_quirks,
            ),
            info={
                "mixer": "sparse_transformer",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "block_size": block_size,
                "num_summary_columns": num_summary_columns,
                "lra_quirks": lra_quirks,
            },
        )
