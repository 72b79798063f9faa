"""Mega layers: plain PyTorch modules, one file per layer kind (the maths only).

ema.py (eqs. 2-3), gated_attention.py (eqs. 6-16, the layer), attention_dispatch.py (eq. 11 over
a whole sequence: chunking and which kernel runs), attention_backends.py and blocked_attention.py
(the kernels), relative_position.py, norms.py, nffn.py (eq. 17), block.py, activations.py,
dropout.py; ssm_kernels.py (the S4 / S4D kernels, their FFT convolution, and the S4D gate that
replaces the EMA with `ema_kernel: s4d`).
"""

from mega_lra.layers.attention_dispatch import chunked_attention
from mega_lra.layers.block import MegaBlock, run_blocks
from mega_lra.layers.ema import EMAState, MultiDimensionDampedEMA
from mega_lra.layers.gated_attention import AttentionState, MovingAverageGatedAttention
from mega_lra.layers.nffn import NormalizedFeedForwardNetwork
from mega_lra.layers.norms import RMSNorm, ScaleNorm, SequenceNorm
from mega_lra.layers.relative_position import (
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
)
from mega_lra.layers.ssm_kernels import DiagKernel, DPLRKernel, S4DGate, SSMConvolution

__all__ = [
    "AttentionState",
    "DPLRKernel",
    "DiagKernel",
    "EMAState",
    "MegaBlock",
    "MovingAverageGatedAttention",
    "MultiDimensionDampedEMA",
    "NormalizedFeedForwardNetwork",
    "RMSNorm",
    "RotaryRelativePositionalBias",
    "S4DGate",
    "SSMConvolution",
    "ScaleNorm",
    "SequenceNorm",
    "SimpleRelativePositionalBias",
    "chunked_attention",
    "run_blocks",
]
