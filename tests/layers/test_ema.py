"""The damped EMA against an explicit O(L^2) double sum, its masking, dtypes, state, gradients."""

import pytest
import torch

from mega_lra.layers.ema import MultiDimensionDampedEMA, fft_length
from tests.helpers import naive_ema


def make_ema(bidirectional, truncation, dim=5, ndim=3, seed=0):
    torch.manual_seed(seed)
    ema = MultiDimensionDampedEMA(dim, ndim, bidirectional=bidirectional, truncation=truncation)
    with torch.no_grad():  # spread decay rates so long and short memories both show up
        ema.damping_factor.normal_(0.0, 1.0)
        ema.decay_factor.normal_(0.0, 1.0)
    return ema.double()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("truncation", [None, 4, 11, 50])
def test_fft_matches_explicit_double_sum_float64(bidirectional, truncation):
    ema = make_ema(bidirectional, truncation)
    x = torch.randn(2, 11, 5, dtype=torch.float64)
    out, _ = ema(x)
    assert out.dtype == torch.float64
    for b in range(2):
        expected = naive_ema(ema, x[b])
        torch.testing.assert_close(out[b], expected, rtol=1e-12, atol=1e-12)


def test_truncation_limits_memory():
    ema = make_ema(False, 3)
    x = torch.zeros(1, 10, 5, dtype=torch.float64)
    x[0, 2] = 1.0
    out, _ = ema(x)
    # the impulse at t=2 reaches t=2,3,4 (3 taps) and nothing later (up to FFT rounding)
    assert out[0, 5:].abs().max() < 1e-15
    assert torch.all(out[0, 2:5].abs().sum(-1) > 1e-3)


def test_padded_positions_are_zeroed_before_convolution():
    ema = make_ema(True, None)
    x = torch.randn(1, 9, 5, dtype=torch.float64)
    mask = torch.ones(1, 9)
    mask[0, 6:] = 0
    out_masked, _ = ema(x, mask)
    x_zeroed = x.clone()
    x_zeroed[0, 6:] = 0
    out_zeroed, _ = ema(x_zeroed)
    # real positions see only real inputs; the omega term uses the unmasked input
    torch.testing.assert_close(out_masked[0, :6], out_zeroed[0, :6], rtol=1e-13, atol=1e-13)
    assert not torch.allclose(out_masked[0, 6:], out_zeroed[0, 6:])


def test_float32_and_bfloat16_inputs_keep_their_dtype_with_fp32_fft():
    ema = make_ema(True, None).float()
    x = torch.randn(2, 16, 5)
    out32, _ = ema(x)
    out16, _ = ema(x.bfloat16())
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("truncation", [None, 3])
def test_recurrent_steps_equal_convolution(truncation):
    ema = make_ema(False, truncation)
    x = torch.randn(2, 12, 5, dtype=torch.float64)
    full, _ = ema(x)
    _, state = ema(x[:, :4], return_state=True)
    steps, state = ema(x[:, 4:], state=state)
    torch.testing.assert_close(steps, full[:, 4:], rtol=1e-12, atol=1e-12)
    state0 = ema.initial_state(2, torch.float64, x.device)
    from_scratch, _ = ema(x, state=state0)
    torch.testing.assert_close(from_scratch, full, rtol=1e-12, atol=1e-12)


def test_bidirectional_refuses_decoding_state():
    ema = make_ema(True, None)
    with pytest.raises(ValueError, match="unidirectional"):
        ema(torch.randn(1, 3, 5, dtype=torch.float64), return_state=True)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradcheck_float64(bidirectional):
    ema = make_ema(bidirectional, 5, dim=3, ndim=2)
    x = torch.randn(1, 7, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 7, dtype=torch.float64)
    mask[0, 0] = 0

    def fn(inp, *params):
        return ema(inp, mask)[0]

    assert torch.autograd.gradcheck(fn, (x, *ema.parameters()), eps=1e-6, atol=1e-7)


def test_init_follows_the_original():
    torch.manual_seed(0)
    ema = MultiDimensionDampedEMA(64, 8, bidirectional=True)
    assert ema.damping_factor.shape == (128, 8, 1)
    assert ema.kernel_projection_matrix.shape == (128, 8)
    assert ema.residual_weight.shape == (64,)
    beta = ema.ema_expansion_matrix.detach().squeeze(-1)
    signs = torch.tensor([1.0, -1.0] * 4)
    assert torch.all(torch.sign(beta) == signs)  # +-1 offsets dominate N(0, 0.02)
    assert abs(float((beta - signs).std()) - 0.02) < 0.005
    assert abs(float(ema.damping_factor.detach().std()) - 0.2) < 0.03


def test_fft_length_is_smooth_and_sufficient():
    for n in [1, 7, 100, 1023, 1025, 4097, 12345]:
        m = fft_length(n)
        assert m >= n and m < 2 * n
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert r == 1
