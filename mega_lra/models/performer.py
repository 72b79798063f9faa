"""Performer (LRA Table 1's "Performer"; Choromanski et al. 2021): LRA's pre-LN blocks with FAVOR
attention (mega_lra/layers/baselines/favor.py), linear in L. `kernel: relu` is LRA's default
generalized attention (deterministic ReLU + 1e-3 features, no projection; Text, Retrieval, Image,
Pathfinder); `kernel: softmax` is FAVOR+ with `num_random_features` positive orthogonal random
features (LRA's ListOps config, m = 2), redrawn every `feature_redraw_interval` training calls.
`lra_quirks: true` is LRA's code: padding unmasked, softmax features redrawn on every call from a
data-seeded generator.
"""

from __future__ import annotations

from mega_lra.layers.baselines.favor import FavorAttention
from mega_lra.models.prenorm_stack import PreLNStack


class PerformerBackbone(PreLNStack):
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
        kernel: str = "relu",
        num_random_features: int = 256,
        feature_redraw_interval: int = 1000,
        lra_quirks: bool = False,
    ) -> None:
        super().__init__(
            hidden_size,
            num_hidden_layers,
            ffn_hidden_size,
            dropout_prob,
            max_length=max_length,
            attention=lambda: FavorAttention(
                hidden_size,
                num_attention_heads,
                qkv_size,
                attention_dropout_prob,
                max_length,
                kernel=kernel,
                num_random_features=num_random_features,
                feature_redraw_interval=feature_redraw_interval,
                lra_quirks=lra_quirks,
            ),
            info={
                "mixer": "performer",
                "attention_activation": f"favor_{kernel}",
                "num_attention_heads": num_attention_heads,
                "qkv_size": qkv_size or hidden_size,
                "kernel": kernel,
                **(
                    {
                        "num_random_features": num_random_features,
                        "feature_redraw_interval": feature_redraw_interval,
                    }
                    if kernel == "softmax"
                    else {}
                ),
                "lra_quirks": bool(lra_quirks),
            },
        )
