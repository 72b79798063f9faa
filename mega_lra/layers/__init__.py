"""Mega layers: plain PyTorch modules, one file per layer kind."""

from mega_lra.layers.block import MegaBlock, run_blocks
from mega_lra.layers.ema import EMAState, MultiDimensionDampedEMA
from mega_lra.layers.gated_attention import AttentionState, MovingAverageGatedAttention
from mega_lra.layers.nffn import NormalizedFeedForwardNetwork
from mega_lra.layers.norms import RMSNorm, ScaleNorm, SequenceNorm
from mega_lra.layers.relative_position import (
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
)

__all__ = [
    "AttentionState",
    "EMAState",
    "MegaBlock",
    "MovingAverageGatedAttention",
    "MultiDimensionDampedEMA",
    "NormalizedFeedForwardNetwork",
    "RMSNorm",
    "RotaryRelativePositionalBias",
    "ScaleNorm",
    "SequenceNorm",
    "SimpleRelativePositionalBias",
    "run_blocks",
]
