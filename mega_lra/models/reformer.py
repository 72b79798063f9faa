"""Reformer (Kitaev et al. 2020) on LRA's pre-LN encoder stack: every block's self-attention is
`LSHAttention` (shared-QK attention within sorted hash-bucket chunks;
mega_lra/layers/baselines/lsh.py). As in LRA, the blocks are ordinary pre-LN residual blocks (no
reversible layers, no chunked FFN).

The paper's attention by default: keys unit-normalised, logits / sqrt(d), no attending to self
unless nothing else is in reach, padding masked, `num_hashes` rounds de-duplicated, chunks of
`bucket_size` with n_buckets = 2 ceil(max_length / bucket_size). `num_buckets` set instead gives
LRA's chunking (n_buckets chunks of max_length / n_buckets per round, O(L^2 / 5) at 10 buckets,
as LRA's recipes run). `lra_quirks: true` is LRA's as-coded attention (logits * sqrt(d), raw keys,
no self or padding mask, one fixed rotation, no output projection, d = D / h).
"""

from __future__ import annotations

from mega_lra.layers.baselines.lsh import LSHAttention
from mega_lra.models.prenorm_stack import PreLNStack


class ReformerBackbone(PreLNStack):
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
        num_hashes: int = 1,
        bucket_size: int = 64,
        num_buckets: int | None = None,
        hash_seed: int | None = None,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: LSHAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                num_hashes=num_hashes,
                bucket_size=bucket_size,
                num_buckets=num_buckets,
                hash_seed=hash_seed,
                lra_quirks=lra_quirks,
            ),
            info={
                "mixer": "reformer",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": hidden_size if lra_quirks else qkv_size or hidden_size,
                "num_hashes": num_hashes,
                "bucket_size": None if num_buckets is not None or lra_quirks else bucket_size,
                "num_buckets": num_buckets,
                "hash_seed": hash_seed,
                "lra_quirks": lra_quirks,
            },
        )
