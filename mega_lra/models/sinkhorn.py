"""Sinkhorn Transformer (LRA Table 1's "Sinkhorn Transformer") on LRA's pre-LN encoder stack:
every block's self-attention is `SinkhornAttention` (mega_lra/layers/baselines/sinkhorn.py).

Default, the paper's method: blocks of b = `block_size` tokens, a sort net on the block summaries,
Sinkhorn balancing (`sinkhorn_iterations` rounds at `temperature`, Gumbel noise in training only)
into a soft block permutation, each query attending to its own block and its sorted block;
padded inside to a multiple of b, padding masked.

`lra_quirks: true` computes LRA's code as written: strided groups, a softmax sort whose einsum is
a no-op, a second attention over b chunk sums, no length padding (so the data loader pads each
batch to a multiple of b here: `pad_multiple`).
"""

from __future__ import annotations

from mega_lra.layers.baselines.sinkhorn import SinkhornAttention
from mega_lra.models.prenorm_stack import PreLNStack


class SinkhornBackbone(PreLNStack):
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
        sinkhorn_iterations: int = 5,
        temperature: float = 0.75,
        max_num_blocks: int | None = None,
        lra_quirks: bool = False,
    ) -> None:
        padded_max = max_length
        if lra_quirks and max_length:  # batches are padded to a multiple of b (below)
            padded_max = -(-max_length // block_size) * block_size
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=padded_max,
            attention=lambda: SinkhornAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                block_size=block_size,
                sinkhorn_iterations=sinkhorn_iterations,
                temperature=temperature,
                max_num_blocks=max_num_blocks,
                lra_quirks=lra_quirks,
            ),
            info={
                "mixer": "sinkhorn",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "block_size": block_size,
                "sinkhorn_iterations": sinkhorn_iterations,
                "temperature": temperature,
                "lra_quirks": lra_quirks,
            },
        )
        # LRA's attention does not pad; the collator pads each batch's length to a multiple of b
        self.pad_multiple = block_size if lra_quirks else 0
