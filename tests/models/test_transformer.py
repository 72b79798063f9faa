"""The Transformer baseline (XFM‡): shapes, padding invariance, positions, and one layer's value
against an explicit softmax(Q K^T / sqrt(d_head)) V computation."""

import math

import pytest
import torch

from mega_lra.models import LRAClassifier, TransformerBackbone
from mega_lra.models.encoders import sinusoidal_embedding
from mega_lra.models.transformer import TransformerLayer
from tests.helpers import perturb_

SMALL = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    ffn_hidden_size=24,
    dropout_prob=0.0,
    attention_dropout_prob=0.0,
)


def classifier(**overrides):
    fields = {**SMALL, **overrides}
    return LRAClassifier(
        TransformerBackbone,
        num_classes=2,
        vocab_size=50,
        max_length=40,
        embedding_std=0.02,
        scale_embedding=True,
        positions="sinusoidal",
        **fields,
    )


def hidden(model, ids, mask=None):
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    return model.backbone(model.embed(ids, keep), keep)


def test_default_fields_are_the_lra_text_size():
    backbone = TransformerBackbone()
    layer = backbone.layers[0]
    assert (len(backbone.layers), backbone.hidden_size, layer.num_heads) == (4, 256, 4)
    assert layer.fc1.out_features == 1024


def test_shapes_and_length_limit():
    model = classifier()
    out = hidden(model, torch.randint(2, 50, (3, 11)))
    assert out.shape == (3, 11, 16)
    with pytest.raises(ValueError, match="max_length 40"):
        hidden(model, torch.randint(2, 50, (1, 41)))


def test_sinusoid_is_fairseqs_and_zero_at_padding():
    pos = torch.tensor([1, 2, 7])
    emb = sinusoidal_embedding(pos, 8, padding_idx=1)
    freqs = torch.exp(torch.arange(4) * -(math.log(10000) / 3))
    torch.testing.assert_close(emb[2], torch.cat([(7 * freqs).sin(), (7 * freqs).cos()]))
    assert emb[0].abs().max() == 0


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = perturb_(classifier()).double()
    ids = torch.randint(2, 50, (1, 9))
    alone = hidden(model, ids)
    padded_ids = torch.cat([ids, torch.ones(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 4)], dim=1)
    padded = hidden(model, padded_ids, mask)
    torch.testing.assert_close(padded[:, :9], alone, rtol=1e-10, atol=1e-10)
    # left padding: positions restart at the first real token, so the output is the same too
    left_ids = torch.cat([torch.ones(1, 4, dtype=torch.long), ids], dim=1)
    left = hidden(model, left_ids, mask.flip(1))
    torch.testing.assert_close(left[:, 4:], alone, rtol=1e-10, atol=1e-10)


def test_layer_matches_explicit_attention():
    torch.manual_seed(1)
    layer = perturb_(TransformerLayer(16, 4, 24, 0.0, 0.0, 0.0, 1e-5)).double()
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
    with pytest.raises(ValueError, match="model.num_attention_heads=3"):
        TransformerBackbone(hidden_size=16, num_attention_heads=3)
