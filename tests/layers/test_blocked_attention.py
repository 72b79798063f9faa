"""The blocked softmax and element (laplace / relu2) attention kernels: their backward against
autograd's numerical gradients, their values against explicit O(L^2) sums, and the bias helpers
against explicit index formulas."""

import pytest
import torch

from mega_lra.layers.activations import ELEMENT_ATTENTION
from mega_lra.layers.blocked_attention import (
    antidiagonal_sums,
    bias_rows,
    blocked_element_attention,
    blocked_softmax_attention,
)


def test_bias_rows_index_the_table_by_key_minus_query():
    table = torch.arange(15.0)
    rows = bias_rows(table, center=7, last_query=4, n_q=3, n_k=5)  # queries 4, 3, 2
    expected = torch.tensor([[7.0 + j - (4 - i) for j in range(5)] for i in range(3)])
    torch.testing.assert_close(rows, expected)


def test_antidiagonal_sums_collect_each_offset():
    grad = torch.randn(3, 5, dtype=torch.float64)
    sums = antidiagonal_sums(grad)
    expected = torch.zeros(7, dtype=torch.float64)
    for i in range(3):
        for j in range(5):
            expected[i + j] += grad[i, j]
    torch.testing.assert_close(sums, expected)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_table", [True, False])
def test_gradcheck_float64(causal, with_table):
    torch.manual_seed(0)
    groups, length, zdim, hdim = 3, 7, 4, 5
    q = torch.randn(groups, length, zdim, dtype=torch.float64, requires_grad=True)
    k = torch.randn(groups, length, zdim, dtype=torch.float64, requires_grad=True)
    v = torch.randn(groups, length, hdim, dtype=torch.float64, requires_grad=True)
    table = torch.randn(2 * length + 3, dtype=torch.float64, requires_grad=True)
    key_real = torch.ones(groups, 1, length, dtype=torch.bool)
    key_real[1, 0, 5:] = False  # padding
    key_real[2] = False  # a group of padding only: rows fall back to the unmasked keys

    def fn(q, k, v, table):
        return blocked_softmax_attention(
            q, k, v, table if with_table else None, length + 1, key_real, causal, block=3
        )

    assert torch.autograd.gradcheck(fn, (q, k, v, table), eps=1e-6, atol=1e-7)


def _element_inputs(groups=3, length=7, zdim=4, hdim=5, dtype=torch.float64):
    torch.manual_seed(0)
    q = torch.randn(groups, length, zdim, dtype=dtype, requires_grad=True)
    k = torch.randn(groups, length, zdim, dtype=dtype, requires_grad=True)
    v = torch.randn(groups, length, hdim, dtype=dtype, requires_grad=True)
    table = torch.randn(2 * length + 3, dtype=dtype, requires_grad=True)
    key_real = torch.ones(groups, 1, length, dtype=torch.bool)
    key_real[1, 0, 5:] = False  # padding
    key_real[2] = False  # a group of padding only: every weight is zero
    return q, k, v, table, key_real


@pytest.mark.parametrize("activation", ["laplace", "relu2"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_table", [True, False])
def test_element_attention_gradcheck_float64(activation, causal, with_table):
    q, k, v, table, key_real = _element_inputs()
    center = q.size(1) + 1

    def fn(q, k, v, table):
        return blocked_element_attention(
            q, k, v, table if with_table else None, center, key_real, causal, 3, activation
        )

    assert torch.autograd.gradcheck(fn, (q, k, v, table), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("activation", ["laplace", "relu2"])
@pytest.mark.parametrize("causal", [False, True])
def test_element_attention_equals_explicit_sum_float64(activation, causal):
    """out[g, i] = sum_j f(q_i . k_j + table[center + j - i]) v_j over real (and, causal,
    earlier) keys j: unnormalised, masked weights are zero, no fallback."""
    q, k, v, table, key_real = _element_inputs(length=9)
    center = 10
    out = blocked_element_attention(q, k, v, table, center, key_real, causal, 4, activation)
    f = ELEMENT_ATTENTION[activation]
    expected = torch.zeros_like(out)
    for g in range(q.size(0)):
        for i in range(q.size(1)):
            for j in range(q.size(1)):
                if key_real[g, 0, j] and (not causal or j <= i):
                    weight = f(q[g, i] @ k[g, j] + table[center + j - i])
                    expected[g, i] += weight * v[g, j]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["laplace", "relu2"])
def test_element_attention_with_bfloat16_values_accumulates_in_float32(activation):
    """Scores and f in float32, W v a bf16 GEMM with float32 accumulation: a sum over 4096 keys
    stays within bf16 rounding of the float64 value (a bf16 running sum would stall at 256)."""
    torch.manual_seed(0)
    length = 4096
    q = torch.full((1, length, 4), 0.5)
    k = torch.full((1, length, 4), 0.5)  # q . k = 1: every weight f(1) > 0.5
    v = torch.ones(1, length, 8, dtype=torch.bfloat16)
    out = blocked_element_attention(q, k, v, None, 0, None, False, 1024, activation)
    assert out.dtype == torch.bfloat16
    expected = length * ELEMENT_ATTENTION[activation](torch.tensor(1.0, dtype=torch.float64))
    assert (out.double() / expected - 1).abs().max() < 1e-2
