"""The attention backends (`mega_lra/layers/attention_backends.py`) against the reference path:
SDPA (runs on CPU through its math/flash kernels, on CUDA through the memory-efficient kernel),
FlexAttention (forward in eager mode on CPU; forward and backward compiled on CUDA) and the
blocked kernels on CUDA. Values and every gradient (the bias table's included) are compared with
`fused_attention = False` layers holding the same weights. CUDA variants carry the `gpu` marker."""

import itertools
import warnings

import pytest
import torch

from mega_lra.hf.configuration import ConfigError
from mega_lra.layers import attention_backends as ab
from mega_lra.layers.gated_attention import MovingAverageGatedAttention
from tests.gpu_helpers import DEVICES, relative_error, requires_cuda
from tests.helpers import perturb_, tiny_config

CASES = list(
    itertools.product(
        [-1, 12],  # chunk size (-1: full attention)
        [False, True],  # causal
        ["simple", "rotary"],
    )
)


def make_layer(device="cpu", dtype=torch.float32, seed=0, **overrides):
    fields = dict(
        shared_representation_size=16,  # Z and H multiples of 8: the fused CUDA kernels' tiles
        intermediate_size=32,
        truncation=7,
    )
    fields.update(overrides)
    causal = fields.pop("causal", False)
    fields.update(is_decoder=causal, bidirectional=not causal)
    torch.manual_seed(seed)
    layer = MovingAverageGatedAttention(tiny_config(**fields))
    perturb_(layer, 0.3, seed)
    return layer.to(device=device, dtype=dtype).eval()


def padded_batch(length, chunk, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, length, 16, generator=gen)
    mask = torch.ones(3, length)
    mask[1, length - 9 :] = 0  # right padding
    mask[2, :6] = 0  # left padding
    if chunk > 0:
        mask[1, chunk:] = 0  # whole chunks of padding: their rows attend without the mask
    return x.to(device), mask.to(device)


def pair(backend, chunk, causal, bias, device, dtype=torch.float32, **extra):
    common = dict(
        use_chunking=chunk > 0,
        chunk_size=chunk,
        causal=causal,
        relative_positional_bias=bias,
        **extra,
    )
    ref = make_layer(device, dtype, attention_backend="reference", **common)
    ref.fused_attention = False  # the plain reference: one SDPA over each chunk
    fast = make_layer(device, dtype, attention_backend=backend, **common)
    return ref, fast


def forward_backward(layer, x, mask, autocast=None):
    xi = x.clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
        out, _ = layer(xi, mask)
    out.float().square().sum().backward()
    return out, [xi.grad, *(p.grad for p in layer.parameters())]


def assert_same_values_and_grads(ref, fast, x, mask, tol=1e-4):
    out_ref, grads_ref = forward_backward(ref, x, mask)
    out, grads = forward_backward(fast, x, mask)
    assert torch.isfinite(out).all()
    scale = out_ref.abs().max()
    assert (out - out_ref).abs().max() / scale < tol
    names = ["x", *(n for n, _ in fast.named_parameters())]
    for name, g_ref, g in zip(names, grads_ref, grads):
        err = (g - g_ref).abs().max() / g_ref.abs().max().clamp(min=1e-12)
        assert err < tol, f"gradient of {name}: relative error {err:.2e}"


# ----------------------------------------------------------------------------- dispatch
def test_auto_picks_reference_on_cpu_and_the_fast_kernel_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ab.resolve_backend("auto", cpu, softmax=True) == "reference"
    assert ab.resolve_backend("auto", cuda, softmax=True) == ab.CUDA_AUTO
    assert ab.CUDA_AUTO in ("sdpa", "flex")
    for requested in ab.BACKENDS:  # laplace / relu2 always take the blocked kernel
        assert ab.resolve_backend(requested, cuda, softmax=False) == "reference"
    assert ab.resolve_backend("sdpa", cpu, softmax=True) == "sdpa"
    assert ab.resolve_backend("flex", cuda, softmax=True, dropout=0.1) == "sdpa"
    assert ab.resolve_backend("flex", cuda, softmax=True, dtype=torch.float64) == "sdpa"
    assert ab.resolve_backend("flex", cuda, softmax=True, dtype=torch.bfloat16) == "flex"


def test_flex_is_not_used_with_deterministic_algorithms():
    cuda = torch.device("cuda")
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        ab._warn_deterministic.cache_clear()
        with pytest.warns(UserWarning, match="atomic adds"):
            assert ab.resolve_backend("flex", cuda, softmax=True) == "sdpa"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # auto falls back silently
            ab.CUDA_AUTO, saved = "flex", ab.CUDA_AUTO
            try:
                assert ab.resolve_backend("auto", cuda, softmax=True) == "sdpa"
            finally:
                ab.CUDA_AUTO = saved
    finally:
        torch.use_deterministic_algorithms(before)
    assert ab.resolve_backend("flex", cuda, softmax=True) == ("sdpa" if before else "flex")


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(attention_backend="fast"), "attention_backend='fast'"),
        (dict(attention_backend="flex", attention_activation="laplace"), "softmax attention"),
        (dict(attention_backend="sdpa", attention_activation="relu2"), "softmax attention"),
        (dict(attention_backend="flex", attention_probs_dropout_prob=0.1), "attention dropout"),
    ],
)
def test_config_refuses_backends_that_cannot_run(fields, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(**fields)


def test_hankel_bias_and_its_gradient_equal_the_gathered_bias():
    table = torch.randn(2 * 20 - 1, dtype=torch.float64, requires_grad=True)
    for center, length in ((19, 20), (19, 7), (10, 11)):
        pos = torch.arange(length)
        gathered = table[center + pos[None, :] - pos[:, None]]
        hankel = ab.hankel_bias(table, center, length)
        torch.testing.assert_close(hankel, gathered, rtol=0, atol=0)
        up = torch.randn(length, length, dtype=torch.float64)
        (g1,) = torch.autograd.grad(gathered, table, up)
        (g2,) = torch.autograd.grad(hankel, table, up)
        torch.testing.assert_close(g2, g1, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- flex block mask
def _key_real(batch, length, seed):
    gen = torch.Generator().manual_seed(seed)
    real = torch.ones(batch, length, dtype=torch.bool)
    lengths = torch.randint(1, length, (batch,), generator=gen)
    for b in range(batch):
        real[b, lengths[b] :] = False
    real[-1] = False
    real[-1, 50:90] = True  # real keys in the middle: lonely rows before them (causal)
    return real


def _pairs(mask_mod, batch, length):
    b = torch.arange(batch)[:, None, None]
    q = torch.arange(length)[None, :, None]
    kv = torch.arange(length)[None, None, :]
    return mask_mod(b, 0, q, kv).expand(batch, length, length)


def _block_sets(counts, indices, batch, nb):
    sets = torch.zeros(batch, nb, nb, dtype=torch.bool)
    for b in range(batch):
        for i in range(nb):
            sets[b, i, indices[b, 0, i, : counts[b, 0, i]].long()] = True
    return sets


@pytest.mark.parametrize("chunk", [128, 64, 200, 96, 512])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_flex_block_mask_lists_every_visible_pair_and_only_full_blocks_as_full(
    chunk, causal, padding
):
    batch, length, block = 3, 512, 64
    nb = length // block
    key_real = _key_real(batch, length, chunk) if padding else None
    lonely = None if key_real is None else ab.lonely_rows(key_real, chunk, causal)
    bm = ab.chunk_block_mask(batch, length, chunk, causal, key_real, lonely, "cpu", block)
    pairs = _pairs(ab.chunk_mask_mod(chunk, causal, key_real, lonely), batch, length)
    blocks = pairs.view(batch, nb, block, nb, block)
    any_pair = blocks.any(-1).any(-2)  # (B, nb, nb)
    all_pairs = blocks.all(-1).all(-2)
    kv_num = bm.kv_num_blocks.expand(batch, 1, nb)
    kv_idx = bm.kv_indices.expand(batch, 1, nb, nb)
    partial = _block_sets(kv_num, kv_idx, batch, nb)
    full = _block_sets(
        bm.full_kv_num_blocks.expand(batch, 1, nb),
        bm.full_kv_indices.expand(batch, 1, nb, nb),
        batch,
        nb,
    )
    assert not (partial & full).any()
    assert ((partial | full) >= any_pair).all(), "a block with visible pairs is skipped"
    assert (all_pairs >= full).all(), "a block listed as full has masked pairs"
    if key_real is None:  # exact: only blocks with visible pairs are visited
        assert ((partial | full) == any_pair).all()
        assert (full == all_pairs).all()


@pytest.mark.parametrize("chunk", [12, 128, 40])
@pytest.mark.parametrize("causal", [False, True])
def test_lonely_rows_are_the_rows_without_a_visible_real_key(chunk, causal):
    key_real = _key_real(4, 256, chunk)
    lonely = ab.lonely_rows(key_real, chunk, causal)
    pos = torch.arange(256)
    same = (pos[:, None] // chunk) == (pos[None, :] // chunk)
    visible = same & (pos[None, :] <= pos[:, None] if causal else True)
    expected = ~(visible[None] & key_real[:, None, :]).any(-1)
    assert (lonely == expected).all()


# ---------------------------------------------------------------------- SDPA backend
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk,causal,bias", CASES)
def test_sdpa_backend_matches_reference_values_and_gradients(device, chunk, causal, bias):
    """Bias (with the table's gradient), chunking, padding on both sides, all-padding chunks."""
    ref, fast = pair("sdpa", chunk, causal, bias, device)
    x, mask = padded_batch(29, chunk, device)
    assert_same_values_and_grads(ref, fast, x, mask)


@pytest.mark.parametrize("device", DEVICES)
def test_sdpa_backend_without_padding_matches_reference(device):
    ref, fast = pair("sdpa", 12, False, "simple", device)
    x, _ = padded_batch(36, 12, device)
    assert_same_values_and_grads(ref, fast, x, None)


def test_sdpa_backend_matches_reference_float64():
    ref, fast = pair("sdpa", 4, True, "simple", "cpu", dtype=torch.float64)
    x, mask = padded_batch(13, 4, "cpu")
    x = x.double()
    torch.testing.assert_close(fast(x, mask)[0], ref(x, mask)[0], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- flex backend
@pytest.mark.parametrize("chunk,causal,bias", CASES)
def test_flex_backend_forward_matches_reference_cpu(chunk, causal, bias):
    """Eager FlexAttention on CPU (no backward there): the block mask, score_mod and padding
    give the reference values."""
    ref, fast = pair("flex", chunk, causal, bias, "cpu")
    x, mask = padded_batch(29, chunk, "cpu")
    with torch.no_grad():
        out_ref, _ = ref(x, mask)
        out, _ = fast(x, mask)
    assert (out - out_ref).abs().max() / out_ref.abs().max() < 1e-5


def test_flex_backend_refuses_to_train_on_cpu():
    layer = make_layer(attention_backend="flex", use_chunking=True, chunk_size=4)
    with pytest.raises(RuntimeError, match="cannot train on CPU"):
        layer(torch.randn(1, 8, 16, requires_grad=True))


CUDA_FLEX_CASES = [(128, False, "simple"), (-1, True, "rotary"), (64, True, "simple")]


@pytest.mark.gpu
@pytest.mark.parametrize("chunk,causal,bias", CUDA_FLEX_CASES)
@pytest.mark.parametrize("backend", ["flex", "sdpa", "reference"])
@requires_cuda
def test_cuda_backends_match_reference_values_and_gradients(backend, chunk, causal, bias):
    """On the card: compiled FlexAttention, the memory-efficient SDPA kernel and the blocked
    kernel, several flex blocks per row (L = 300 -> 384), against the plain reference. 1e-3:
    room for a kernel whose float32 dots round like TF32 (~3e-4); a wrong bias offset or mask
    is off by 1e-2 or more."""
    ref, fast = pair(backend, chunk, causal, bias, "cuda", max_positions=512)
    x, mask = padded_batch(300, chunk, "cuda")
    assert_same_values_and_grads(ref, fast, x, mask, tol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("act", ["laplace", "relu2"])
@pytest.mark.parametrize("chunk,causal", [(64, False), (-1, True), (-1, False)])
@requires_cuda
def test_cuda_element_attention_matches_reference_values_and_gradients(act, chunk, causal):
    """laplace / relu2 through the blocked element kernel on the card (query blocks of 128
    rows: three blocks at L = 300) against the plain reference, float32; and in bf16 autocast
    within 2e-2."""
    ref, fast = pair(
        "auto", chunk, causal, "simple", "cuda", attention_activation=act, max_positions=512
    )
    fast.attention_block_size = 128
    x, mask = padded_batch(300, chunk, "cuda")
    assert_same_values_and_grads(ref, fast, x, mask, tol=1e-3)
    out_ref, _ = forward_backward(ref, x, mask)
    out, grads = forward_backward(fast, x, mask, autocast=torch.bfloat16)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    real = mask.bool()
    assert relative_error(out[real], out_ref[real]) < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("backend,chunk", [("sdpa", 128), ("sdpa", -1), ("flex", 128)])
@requires_cuda
def test_cuda_backends_under_bf16_autocast_stay_close_to_float32(backend, chunk):
    ref, fast = pair(backend, chunk, False, "simple", "cuda", max_positions=512)
    x, mask = padded_batch(300, chunk, "cuda")
    out_ref, grads_ref = forward_backward(ref, x, mask)
    out, grads = forward_backward(fast, x, mask, autocast=torch.bfloat16)
    real = mask.bool()
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert relative_error(out[real], out_ref[real]) < 2e-2
    table = dict(zip(["x", *(n for n, _ in fast.named_parameters())], grads))
    table_ref = dict(zip(["x", *(n for n, _ in ref.named_parameters())], grads_ref))
    name = "rel_pos_bias.rel_pos_bias"
    assert relative_error(table[name], table_ref[name]) < 5e-2
