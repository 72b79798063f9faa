"""The Synthesizer of LRA Table 1 (Tay et al. 2021): LRA's pre-LN block stack (`PreLNStack`)
with `SynthesizerAttention` (mega_lra/layers/baselines/synthesizer.py): learned alignment logits
over the task's `max_length`, added to the dot product. `synthesizer_mode: random` (LRA's on
every task), `factorized_random` (rank `factor_rank`) or `dense`. The `random` R has
h * max_length^2 parameters per layer and is refused beyond 2^27 (Path-X; LRA did not run it).
"""

from __future__ import annotations

from mega_lra.layers.baselines.synthesizer import SynthesizerAttention
from mega_lra.models.prenorm_stack import PreLNStack


class SynthesizerBackbone(PreLNStack):
    quadratic = True  # cost grows as L^2: L x L synthetic logits

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
        synthesizer_mode: str = "random",
        use_dot_product: bool = True,
        factor_rank: int = 32,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: SynthesizerAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                synthesizer_mode=synthesizer_mode,
                use_dot_product=use_dot_product,
                factor_rank=factor_rank,
            ),
            info={
                "mixer": "synthesizer",
                "attention_activation": "softmax",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "synthesizer_mode": synthesizer_mode,
                "use_dot_product": use_dot_product,
                "factor_rank": factor_rank if synthesizer_mode == "factorized_random" else None,
            },
        )
