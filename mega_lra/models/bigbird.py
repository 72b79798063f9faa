"""BigBird (Zaheer et al. 2020; LRA Table 1's "BigBird") on LRA's pre-LN encoder stack: every
block's self-attention is `BlockSparseAttention` (mega_lra/layers/baselines/block_sparse.py), the
ITC block-sparse pattern computed in blocks: the first and last blocks of b = `block_size` tokens
are global, every other query block attends to the globals, its 3-block window and r =
`num_random_blocks` random blocks, drawn once per layer (fixed for the run) from the blocks in the
first `random_blocks_from_first` tokens (1024, as the BigBird authors' code and LRA).

The pattern is laid on the task's `max_length` (as LRA pads every input to it), so real tokens'
outputs never depend on how much padding a batch has; padded keys are masked. `lra_quirks: true`
pads as LRA's code does (a whole extra block when the length is a multiple of b).
"""

from __future__ import annotations

from mega_lra.layers.baselines.block_sparse import BlockSparseAttention
from mega_lra.models.prenorm_stack import PreLNStack


class BigBirdBackbone(PreLNStack):
    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        qkv_size: int | None = None,
        ffn_hidden_size: int = 1024,
        dropout_prob: float = 0.1,
        attention_dropout_prob: float = 0.0,
        max_length: int | None = None,
        block_size: int = 64,
        num_random_blocks: int = 3,
        random_blocks_from_first: int | None = 1024,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: BlockSparseAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                block_size=block_size,
                num_random_blocks=num_random_blocks,
                random_blocks_from_first=random_blocks_from_first,
                extra_padding_block=lra_quirks,
            ),
            info={
                "mixer": "bigbird",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "block_size": block_size,
                "num_random_blocks": num_random_blocks,
                "random_blocks_from_first": random_blocks_from_first,
                "lra_quirks": lra_quirks,
            },
        )
