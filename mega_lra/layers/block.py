"""A Mega block = moving-average gated attention followed by the normalised FFN (paper §3.3:
Y = Mega(X), Y' = NFFN(Y)), and `run_blocks`, the loop over a stack of blocks shared by every
model (decoding state per layer, gradient checkpointing)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mega_lra.hf.configuration import MegaConfig
from mega_lra.layers.gated_attention import AttentionState, MovingAverageGatedAttention
from mega_lra.layers.nffn import NormalizedFeedForwardNetwork


class MegaBlock(nn.Module):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        if config.add_cross_attention:
            raise ValueError(
                "add_cross_attention=True: cross-attention is not supported by mega-lra"
            )
        self.mega_layer = MovingAverageGatedAttention(config)
        self.nffn = NormalizedFeedForwardNetwork(config) if config.use_normalized_ffn else None

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: AttentionState | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, AttentionState | None]:
        """x: (B, L, D); attention_mask: (B, L), 1 = real. Returns (x, state)."""
        x, state = self.mega_layer(x, attention_mask, state=state, use_cache=use_cache)
        if self.nffn is not None:
            valid = None if attention_mask is None else attention_mask.to(torch.bool)
            x = self.nffn(x, valid)
        return x, state


def run_blocks(
    blocks: Sequence[MegaBlock],
    x: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    states: Sequence[AttentionState | None] | None = None,
    use_cache: bool = False,
    gradient_checkpointing: bool = False,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, list[AttentionState] | None, list[torch.Tensor] | None]:
    """Run x (B, L, D) through the blocks. Returns (x, new states or None, hidden states or None;
    the hidden states start with the input)."""
    use_cache = use_cache or states is not None  # a given state is always carried forward
    if attention_mask is not None:
        attention_mask = attention_mask.to(torch.bool)  # once, for every block and sub-layer
    hidden = [x] if output_hidden_states else None
    new_states: list[AttentionState] | None = [] if use_cache else None
    for i, block in enumerate(blocks):
        state = None if states is None else states[i]
        if gradient_checkpointing and torch.is_grad_enabled() and not use_cache:
            x, _ = checkpoint(block, x, attention_mask, None, False, use_reentrant=False)
            new_state = None
        else:
            x, new_state = block(
                x, attention_mask, state=state, use_cache=use_cache or state is not None
            )
        if new_states is not None:
            new_states.append(new_state)
        if hidden is not None:
            hidden.append(x)
    return x, new_states, hidden
