"""LRA's Transformer (`xfm`) and the pre-LN block stack every LRA baseline shares: against an
explicit float64 computation written from transformer_baselines.md §1, padding invariance, and
the model file's fields."""

from __future__ import annotations

import math

import pytest
import torch

from mega_lra.layers.baselines.projections import HeadProjections, pad_to_multiple
from mega_lra.layers.baselines.softmax import SoftmaxAttention
from mega_lra.models.xfm import XFMBackbone


def naive_attention(x, mask, wq, wk, wv, wo, heads):
    """y_i = W_O concat_h sum_j softmax_j(q_i . k_j / sqrt(d)) v_j over real keys j, one row and
    one query at a time."""
    out = torch.zeros(x.shape[0], x.shape[1], wo.shape[0], dtype=x.dtype)
    d = wq.shape[0] // heads
    for b in range(x.shape[0]):
        keys = [j for j in range(x.shape[1]) if mask[b, j]]
        for i in range(x.shape[1]):
            parts = []
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                q = wq[sl] @ x[b, i]
                scores = torch.stack([q @ (wk[sl] @ x[b, j]) / math.sqrt(d) for j in keys])
                weights = torch.softmax(scores, 0)
                parts.append(sum(w * (wv[sl] @ x[b, j]) for w, j in zip(weights, keys)))
            out[b, i] = wo @ torch.cat(parts)
    return out


def test_softmax_attention_matches_the_explicit_sum_with_padded_keys_masked():
    torch.manual_seed(0)
    attn = SoftmaxAttention(6, 2, 4, 0.0).double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    p = attn.proj
    expected = naive_attention(
        x, mask, p.query.weight, p.key.weight, p.value.weight, p.out.weight, heads=2
    )
    torch.testing.assert_close(attn(x, mask), expected)


def test_projections_are_bias_free_xavier_and_check_head_width():
    torch.manual_seed(0)
    proj = HeadProjections(128, 8, 64)
    assert proj.head_size == 8 and all(
        m.bias is None for m in (proj.query, proj.key, proj.value, proj.out)
    )
    bound = math.sqrt(6 / (128 + 64))  # Xavier-uniform, fan_in 128, fan_out 64
    assert proj.query.weight.abs().max() <= bound and proj.query.weight.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match="model.qkv_size=10 is not a multiple of"):
        HeadProjections(16, 4, 10)


def test_pad_to_multiple_pads_with_masked_positions_and_reports_the_length():
    x, mask = torch.ones(1, 5, 3), torch.ones(1, 5, dtype=torch.bool)
    px, pm, length = pad_to_multiple(x, mask, 4)
    assert px.shape == (1, 8, 3) and length == 5
    assert pm.tolist() == [[True] * 5 + [False] * 3] and px[0, 5:].abs().sum() == 0
    assert pad_to_multiple(x, mask, 5)[0].shape == (1, 5, 3)  # already a multiple: unchanged


def test_pre_ln_stack_is_lras_block_with_padded_rows_zeroed():
    """x + Attn(LN(x)), then + W2 GELU(W1 LN(.)), padded rows zeroed after each layer."""
    torch.manual_seed(1)
    net = XFMBackbone(8, 2, 2, None, 12, 0.0, 0.0).double().eval()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    keep = mask.unsqueeze(-1).double()
    h = x * keep
    for layer in net.layers:
        ln1, ln2, ffn = layer.attn_norm, layer.ffn_norm, layer.ffn
        a = h + layer.attention(
            torch.nn.functional.layer_norm(h, (8,), ln1.weight, ln1.bias, 1e-6), mask
        )  # noqa: E501
        z = torch.nn.functional.layer_norm(a, (8,), ln2.weight, ln2.bias, 1e-6)
        hidden = torch.nn.functional.gelu(z @ ffn.fc1.weight.T + ffn.fc1.bias)
        h = (a + hidden @ ffn.fc2.weight.T + ffn.fc2.bias) * keep
    torch.testing.assert_close(net(x, mask), h)


def test_extra_padding_changes_no_real_token():
    torch.manual_seed(2)
    net = XFMBackbone(8, 2, 2, None, 12, 0.0, 0.0).double().eval()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    padded = torch.cat([x, torch.randn(1, 3, 8, dtype=torch.float64)], dim=1)
    pmask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(net(padded, pmask)[:, :5], net(x, mask))
    assert net(padded, pmask)[:, 5:].abs().max() == 0


def test_longer_than_max_length_is_refused_by_name():
    net = XFMBackbone(8, 1, 2, None, 8, 0.0, 0.0, max_length=4)
    with pytest.raises(ValueError, match="sequence length 5 exceeds max_length 4"):
        net(torch.randn(1, 5, 8), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="model.num_hidden_layers=0"):
        XFMBackbone(8, 0, 2)
