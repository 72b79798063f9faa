"""The Mega sub-layer: against a naive per-query reference, padding invariance, chunking,
causality and gradients."""

import itertools

import pytest
import torch

from mega_lra.layers.gated_attention import MovingAverageGatedAttention
from tests.helpers import naive_attention_layer, perturb_, tiny_config

ACTIVATIONS = ["softmax", "laplace", "relu2"]


def make_layer(seed=0, dtype=torch.float64, **overrides):
    torch.manual_seed(seed)
    layer = MovingAverageGatedAttention(tiny_config(**overrides))
    perturb_(layer, 0.3, seed)
    return layer.to(dtype).eval()


CASES = list(
    itertools.product(
        ACTIVATIONS,
        [(False, -1), (True, 4), (True, 5)],  # (use_chunking, chunk_size)
        [False, True],  # causal
    )
)


@pytest.mark.parametrize("act,chunking,causal", CASES)
def test_matches_naive_reference_float64(act, chunking, causal):
    use_chunking, chunk = chunking
    layer = make_layer(
        attention_activation=act,
        use_chunking=use_chunking,
        chunk_size=chunk,
        is_decoder=causal,
        bidirectional=not causal,
        truncation=6,
        normalize_before_mega=not causal,
    )
    x = torch.randn(2, 13, 16, dtype=torch.float64)  # 13 is not a multiple of 4 or 5
    out, _ = layer(x)
    for b in range(2):
        torch.testing.assert_close(
            out[b], naive_attention_layer(layer, x[b]), rtol=1e-10, atol=1e-10
        )


@pytest.mark.parametrize("chunk", [-1, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_without_ema_the_input_takes_its_place(chunk, causal):
    # ema_projection_size = 0 removes the EMA (the paper's Figure 4, h = 0)
    layer = make_layer(
        ema_projection_size=0,
        use_chunking=chunk > 0,
        chunk_size=chunk,
        is_decoder=causal,
        bidirectional=not causal,
    )
    assert layer.ema_gate is None
    assert not any("ema" in name for name, _ in layer.named_parameters())
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    out, _ = layer(x)
    for b in range(2):
        torch.testing.assert_close(
            out[b], naive_attention_layer(layer, x[b]), rtol=1e-10, atol=1e-10
        )
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    padded, _ = layer(x, mask)
    torch.testing.assert_close(padded[1, :7], layer(x[1:, :7])[0][0], rtol=1e-10, atol=1e-10)


def test_negative_ema_dimension_is_refused():
    with pytest.raises(ValueError, match="ema_projection_size=-1"):
        tiny_config(ema_projection_size=-1)


@pytest.mark.parametrize("bias", ["simple", "rotary"])
@pytest.mark.parametrize("norm", ["scalenorm", "rmsnorm", "layernorm"])
def test_reference_across_biases_and_norms(bias, norm):
    layer = make_layer(
        relative_positional_bias=bias, normalization_type=norm, use_chunking=True, chunk_size=4
    )
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    out, _ = layer(x)
    torch.testing.assert_close(out[0], naive_attention_layer(layer, x[0]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("chunk", [-1, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("bias", ["simple", "rotary"])
def test_padding_does_not_change_real_tokens(act, chunk, causal, side, bias):
    tol = 1e-10
    layer = make_layer(
        attention_activation=act,
        use_chunking=chunk > 0,
        chunk_size=chunk,
        is_decoder=causal,
        bidirectional=not causal,
        truncation=5,
        relative_positional_bias=bias,
    )
    lengths = [11, 6, 9]  # padding of 0, 5 and 2 tokens: not multiples of the chunk size
    width = max(lengths)
    rows = [torch.randn(n, 16, dtype=torch.float64) for n in lengths]
    x = torch.randn(3, width, 16, dtype=torch.float64) * 100  # garbage in the padding
    mask = torch.zeros(3, width)
    for b, (row, n) in enumerate(zip(rows, lengths)):
        sl = slice(width - n, width) if side == "left" else slice(0, n)
        x[b, sl] = row
        mask[b, sl] = 1
    out, _ = layer(x, mask)
    assert torch.isfinite(out).all()
    for b, (row, n) in enumerate(zip(rows, lengths)):
        alone, _ = layer(row[None])
        sl = slice(width - n, width) if side == "left" else slice(0, n)
        torch.testing.assert_close(out[b, sl], alone[0], rtol=tol, atol=tol)


def test_all_padding_chunks_give_no_nan_float32():
    layer = make_layer(dtype=torch.float32, use_chunking=True, chunk_size=4)
    x = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12)
    mask[1, 3:] = 0  # two whole chunks of padding in row 1
    out, _ = layer(x, mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("length", [7, 8])
def test_chunk_at_least_length_equals_no_chunking(act, length):
    kwargs = dict(attention_activation=act, relative_positional_bias="rotary", truncation=None)
    full = make_layer(**kwargs)
    chunked = make_layer(use_chunking=True, chunk_size=8, **kwargs)
    chunked.load_state_dict(full.state_dict())
    x = torch.randn(2, length, 16, dtype=torch.float64)
    torch.testing.assert_close(chunked(x)[0], full(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 3, 9, 17])
def test_lengths_not_divisible_by_chunk_work(length):
    layer = make_layer(use_chunking=True, chunk_size=4)
    out, _ = layer(torch.randn(2, length, 16, dtype=torch.float64))
    assert out.shape == (2, length, 16)


def test_chunks_do_not_attend_across_boundaries():
    layer = make_layer(use_chunking=True, chunk_size=4, truncation=None)
    with torch.no_grad():  # with the EMA silenced, only attention could carry information
        layer.ema_gate.kernel_projection_matrix.zero_()
        layer.ema_gate.residual_weight.zero_()
    x = torch.randn(1, 8, 16, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x)
    (grad,) = torch.autograd.grad(out[0, :4].sum(), x)
    assert grad[0, 4:].abs().max() == 0


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("chunk", [-1, 4])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_causal_outputs_ignore_the_future(act, chunk, dtype, tol):
    layer = make_layer(
        dtype=dtype,
        attention_activation=act,
        use_chunking=chunk > 0,
        chunk_size=chunk,
        is_decoder=True,
        bidirectional=False,
        truncation=None,
    )
    length = 10
    x = torch.randn(1, length, 16, dtype=dtype, requires_grad=True)
    out, _ = layer(x)
    for t in range(length - 1):
        (grad,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
        scale = grad[0, : t + 1].abs().max()
        assert grad[0, t + 1 :].abs().max() <= tol * scale, f"position {t} sees the future"


def test_gradcheck_whole_layer_float64():
    layer = make_layer(
        use_chunking=True, chunk_size=3, truncation=4, attention_activation="laplace"
    )
    layer.ema_gate.ndim  # noqa: B018
    x = torch.randn(1, 7, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 7, dtype=torch.float64)
    mask[0, -2:] = 0
    params = [p for p in layer.parameters()]

    def fn(inp, *ps):
        return layer(inp, mask)[0]

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


def test_softmax_gradcheck_float64():
    layer = make_layer(is_decoder=True, bidirectional=False)
    x = torch.randn(1, 6, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp)[0], (x,), eps=1e-6, atol=1e-6)


def test_dropout_only_in_training():
    layer = make_layer(dropout_prob=0.5, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], layer(x)[0])
    layer.train()
    assert not torch.allclose(layer(x)[0], layer(x)[0])


def test_feature_dropout_drops_whole_channels():
    from mega_lra.layers.dropout import SequenceDropout

    drop = SequenceDropout(0.5, feature=True).train()
    out = drop(torch.ones(4, 50, 32))
    zero_cols = (out == 0).all(dim=1)  # (B, D): channel zero at every time step
    assert ((out == 0).any(dim=1) == zero_cols).all() and zero_cols.any()


def test_state_requires_causal_model():
    layer = make_layer()
    with pytest.raises(ValueError, match="causal"):
        layer(torch.randn(1, 3, 16, dtype=torch.float64), use_cache=True)


def test_simple_bias_beyond_max_positions_raises_clear_error():
    layer = make_layer(max_positions=8, chunk_size=-1)
    with pytest.raises(ValueError, match="exceeds what the simple relative positional bias"):
        layer(torch.randn(1, 9, 16, dtype=torch.float64))


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("chunk", [-1, 12])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", ["simple", "rotary"])
def test_blocked_attention_equals_unblocked_float32(act, chunk, causal, bias):
    """Query blocks (attention_block_size; softmax through the fused blocked kernel, laplace and
    relu2 recomputed per block) give the values and gradients of one (C, C) attention per chunk
    on the reference path, with padding on both sides."""
    common = dict(
        attention_activation=act,
        use_chunking=chunk > 0,
        chunk_size=chunk,
        is_decoder=causal,
        bidirectional=not causal,
        relative_positional_bias=bias,
        truncation=7,
    )
    ref = make_layer(dtype=torch.float32, attention_block_size=None, **common)
    ref.fused_attention = False  # the reference path: one SDPA / matmul over each chunk
    blocked = make_layer(dtype=torch.float32, attention_block_size=5, **common)
    x = torch.randn(3, 29, 16)
    mask = torch.ones(3, 29)
    mask[1, 20:] = 0  # right padding
    mask[2, :6] = 0  # left padding
    if chunk > 0:
        mask[1, 12:] = 0  # a whole chunk of padding
    outs, grads = [], []
    for layer in (ref, blocked):
        xi = x.clone().requires_grad_()
        out, _ = layer(xi, mask)
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad, *(p.grad for p in layer.parameters())])
    scale = outs[0].abs().max()
    assert (outs[1] - outs[0]).abs().max() / scale < 1e-4
    for g_ref, g_blocked in zip(grads[0], grads[1]):
        assert (g_blocked - g_ref).abs().max() / g_ref.abs().max().clamp(min=1e-12) < 1e-4


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("causal", [False, True])
def test_blocked_attention_matches_naive_reference_float64(act, causal):
    layer = make_layer(
        attention_activation=act,
        is_decoder=causal,
        bidirectional=not causal,
        attention_block_size=4,
        truncation=6,
    )
    x = torch.randn(1, 13, 16, dtype=torch.float64)
    out, _ = layer(x)
    torch.testing.assert_close(out[0], naive_attention_layer(layer, x[0]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("chunk", [-1, 4])
def test_fused_softmax_matches_naive_reference_float64(fused, chunk):
    layer = make_layer(use_chunking=chunk > 0, chunk_size=chunk, attention_block_size=3)
    layer.fused_attention = fused
    x = torch.randn(1, 13, 16, dtype=torch.float64)
    out, _ = layer(x)
    torch.testing.assert_close(out[0], naive_attention_layer(layer, x[0]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [-1, 4])
def test_bfloat16_autocast_forward_and_backward_stay_close_to_float32(chunk):
    layer = make_layer(dtype=torch.float32, use_chunking=chunk > 0, chunk_size=chunk)
    x = torch.randn(2, 13, 16, requires_grad=True)
    ref, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x)
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
