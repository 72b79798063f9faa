"""The Transformer baseline (XFM‡): shapes, padding invariance, positions, and one layer's value
against an explicit softmax(Q K^T / sqrt(d_head)) V computation."""

import math

import pytest
import torch

from mega_lra.transformer import (
    TransformerConfig,
    TransformerEncoder,
    TransformerLayer,
    sinusoidal_embedding,
)
from tests.helpers import perturb_


def small_config(**overrides) -> TransformerConfig:
    fields = dict(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_hidden_size=24,
        max_positions=40,
        dropout_prob=0.0,
        attention_dropout_prob=0.0,
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def test_default_config_is_the_lra_text_size():
    config = TransformerConfig()
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 256, 4)
    assert (config.ffn_hidden_size, config.max_positions) == (1024, 4002)


def test_shapes_and_length_limit():
    model = TransformerEncoder(small_config())
    out = model(torch.randint(2, 50, (3, 11)))
    assert out.shape == (3, 11, 16)
    with pytest.raises(ValueError, match="max_positions 40"):
        model(torch.randint(2, 50, (1, 41)))


def test_sinusoid_is_fairseqs_and_zero_at_padding():
    pos = torch.tensor([1, 2, 7])
    emb = sinusoidal_embedding(pos, 8, padding_idx=1)
    freqs = torch.exp(torch.arange(4) * -(math.log(10000) / 3))
    torch.testing.assert_close(emb[2], torch.cat([(7 * freqs).sin(), (7 * freqs).cos()]))
    assert emb[0].abs().max() == 0


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = perturb_(TransformerEncoder(small_config())).double()
    ids = torch.randint(2, 50, (1, 9))
    alone = model(ids)
    padded_ids = torch.cat([ids, torch.ones(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 4)], dim=1)
    padded = model(padded_ids, attention_mask=mask)
    torch.testing.assert_close(padded[:, :9], alone, rtol=1e-10, atol=1e-10)
    # left padding: positions restart at the first real token, so the output is the same too
    left_ids = torch.cat([torch.ones(1, 4, dtype=torch.long), ids], dim=1)
    left = model(left_ids, attention_mask=mask.flip(1))
    torch.testing.assert_close(left[:, 4:], alone, rtol=1e-10, atol=1e-10)


def test_layer_matches_explicit_attention():
    torch.manual_seed(1)
    config = small_config()
    layer = perturb_(TransformerLayer(config)).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)

    heads, dh = 4, 4
    q, k, v = (x @ layer.qkv_proj.weight.T + layer.qkv_proj.bias).split(16, dim=-1)
    split = lambda t: t.view(2, 6, heads, dh).transpose(1, 2)  # (B, heads, L, dh)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    o = (torch.softmax(scores, dim=-1) @ split(v)).transpose(1, 2).reshape(2, 6, 16)
    a = layer.attn_norm(x + o @ layer.out_proj.weight.T + layer.out_proj.bias)
    hidden = torch.nn.functional.gelu(a @ layer.fc1.weight.T + layer.fc1.bias)
    expected = layer.ffn_norm(a + hidden @ layer.fc2.weight.T + layer.fc2.bias)

    torch.testing.assert_close(layer(x, keep[:, None, None, :]), expected)


def test_bad_head_count_is_refused():
    with pytest.raises(ValueError, match="num_attention_heads 3"):
        TransformerConfig(hidden_size=16, num_attention_heads=3)
