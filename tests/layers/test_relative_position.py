"""Relative positional biases: indexing, range errors, rotary formula and relativity."""

import math

import pytest
import torch

from mega_lra.layers.relative_position import (
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
)


def test_simple_bias_indexes_key_minus_query():
    bias = SimpleRelativePositionalBias(5)
    with torch.no_grad():
        bias.rel_pos_bias.copy_(torch.arange(9.0))
    m = bias.matrix(5)
    for i in range(5):
        for j in range(5):
            assert m[i, j] == 4 + j - i


def test_simple_bias_hf_layout_centre_and_range():
    # HF: table of 2*max_positions-1 entries centred on chunk_size-1
    bias = SimpleRelativePositionalBias(8, center=3)
    with torch.no_grad():
        bias.rel_pos_bias.copy_(torch.arange(15.0))
    assert bias.max_length() == 4
    assert bias.matrix(4)[0, 3] == 6 and bias.matrix(4)[3, 0] == 0
    with pytest.raises(ValueError, match="sequence \\(or chunk\\) length 5 exceeds"):
        bias.matrix(5)


def test_rotary_matches_explicit_formula():
    z = 6
    bias = RotaryRelativePositionalBias(z).double()
    a, b = bias.alpha[0].detach(), bias.b_param[0].detach()
    half = z // 2

    def rot(v, p):
        out = torch.empty_like(v)
        for k in range(half):
            theta = p * math.exp(-k * math.log(10000) / half)
            c, s = math.cos(theta), math.sin(theta)
            out[k] = v[k] * c - v[k + half] * s
            out[k + half] = v[k + half] * c + v[k] * s
        return out

    m = bias.matrix(7).detach()
    for i in range(7):
        for j in range(7):
            expected = rot(a, i) @ rot(b, j)
            assert abs(float(m[i, j] - expected)) < 1e-12 * (1 + abs(float(expected)))


def test_rotary_depends_only_on_offset():
    bias = RotaryRelativePositionalBias(8).double()
    base = bias(torch.arange(6), torch.arange(6))
    shifted = bias(torch.arange(100, 106), torch.arange(100, 106))
    torch.testing.assert_close(shifted, base, rtol=1e-12, atol=1e-12)
    f32 = RotaryRelativePositionalBias(8)  # float32 angles, as the original and HF
    with torch.no_grad():
        f32.load_state_dict(bias.float().state_dict())
    far = f32(torch.arange(1000, 1006), torch.arange(1000, 1006))
    torch.testing.assert_close(far, base.float(), rtol=1e-4, atol=1e-5)


def test_rotary_needs_even_dimension():
    with pytest.raises(ValueError, match="even"):
        RotaryRelativePositionalBias(5)
