"""A whole Mega block: NFFN, gradient checkpointing, cross-attention refusal."""

import pytest
import torch

from mega_lra.layers.block import MegaBlock, run_blocks
from mega_lra.layers.nffn import NormalizedFeedForwardNetwork
from tests.helpers import perturb_, tiny_config


@pytest.mark.parametrize("prenorm", [True, False])
def test_nffn_formula(prenorm):
    config = tiny_config(normalize_before_ffn=prenorm, normalization_type="scalenorm")
    ffn = perturb_(NormalizedFeedForwardNetwork(config)).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    silu = torch.nn.functional.silu

    def norm(t):
        return ffn.norm.norm.scalar * t / torch.sqrt((t**2).mean(-1, keepdim=True) + 1e-5)

    inner = norm(x) if prenorm else x
    y = x + silu(inner @ ffn.fc1.weight.T + ffn.fc1.bias) @ ffn.fc2.weight.T + ffn.fc2.bias
    expected = y if prenorm else norm(y)
    torch.testing.assert_close(ffn(x), expected)


def test_gradient_checkpointing_gives_same_gradients():
    config = tiny_config(use_chunking=True, chunk_size=4)
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(MegaBlock(config) for _ in range(2))
    perturb_(blocks)
    blocks = blocks.double()
    x = torch.randn(2, 10, 16, dtype=torch.float64, requires_grad=True)
    grads = []
    for ckpt in (False, True):
        blocks.zero_grad()
        x.grad = None
        out, _, _ = run_blocks(blocks, x, gradient_checkpointing=ckpt)
        out.square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in blocks.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_hidden_states_start_with_input():
    config = tiny_config()
    blocks = torch.nn.ModuleList(MegaBlock(config) for _ in range(3)).double()
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    out, _, hidden = run_blocks(blocks, x, output_hidden_states=True)
    assert len(hidden) == 4 and hidden[0] is x and hidden[-1] is out


def test_without_nffn_block_is_the_attention_layer():
    config = tiny_config(use_normalized_ffn=False)
    block = MegaBlock(config).double()
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    assert block.nffn is None
    torch.testing.assert_close(block(x)[0], block.mega_layer(x)[0])


def test_cross_attention_is_refused():
    with pytest.raises(ValueError, match="cross-attention is not supported"):
        MegaBlock(tiny_config(add_cross_attention=True))
