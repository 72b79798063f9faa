"""The blocked softmax attention kernel: its backward against autograd's numerical gradients, and
its bias helpers against explicit index formulas."""

import pytest
import torch

from mega_lra.layers.blocked_attention import (
    antidiagonal_sums,
    bias_rows,
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
