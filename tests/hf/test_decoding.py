"""Incremental decoding with the per-layer state equals the full causal forward, on logits,
after parameters are moved away from init: every attention function, chunked or not, with and
without EMA truncation, token by token or after a prompt, and for left-padded batches."""

import itertools

import pytest
import torch

from tests.helpers import TinyLM, perturb_, tiny_config

CASES = list(
    itertools.product(
        ["softmax", "laplace", "relu2"],
        [-1, 4],  # chunk size (-1: none)
        [None, 3],  # truncation
        ["simple", "rotary"],
    )
)


def make_lm(act, chunk, truncation, bias, dtype=torch.float64, seed=0, **extra):
    torch.manual_seed(seed)
    config = tiny_config(
        **extra,
        is_decoder=True,
        bidirectional=False,
        attention_activation=act,
        use_chunking=chunk > 0,
        chunk_size=chunk,
        truncation=truncation,
        relative_positional_bias=bias,
        normalization_type="scalenorm",
    )
    return perturb_(TinyLM(config), 0.3, seed).to(dtype).eval()


def decode(model, ids, prompt, mask=None):
    """Logits of a prompt pass (use_cache) followed by one token per call."""
    m = None if mask is None else mask[:, :prompt]
    logits, states = model(ids[:, :prompt], m, use_cache=True)
    out = [logits]
    for t in range(prompt, ids.size(1)):
        m = None if mask is None else mask[:, t : t + 1]
        logits, states = model(ids[:, t : t + 1], m, states=states)
        out.append(logits)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("act,chunk,truncation,bias", CASES)
def test_token_by_token_equals_full_forward_float64(act, chunk, truncation, bias):
    model = make_lm(act, chunk, truncation, bias)
    ids = torch.randint(0, 37, (2, 14))
    full, _ = model(ids)
    for prompt in (1, 6):
        torch.testing.assert_close(decode(model, ids, prompt), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [-1, 4])
def test_decoding_without_ema_equals_full_forward(chunk):
    # ema_projection_size = 0 (Figure 4's ablation): the state holds no EMA part
    model = make_lm("softmax", chunk, None, "simple", ema_projection_size=0)
    ids = torch.randint(0, 37, (2, 14))
    full, _ = model(ids)
    torch.testing.assert_close(decode(model, ids, 3), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("act", ["softmax", "laplace"])
def test_token_by_token_equals_full_forward_float32(act):
    model = make_lm(act, 4, 3, "rotary", dtype=torch.float32)
    ids = torch.randint(0, 37, (2, 14))
    full, _ = model(ids)
    torch.testing.assert_close(decode(model, ids, 5), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act,chunk", [("softmax", 4), ("laplace", 4), ("relu2", -1)])
def test_left_padded_batch_decodes_like_unpadded_rows(act, chunk):
    model = make_lm(act, chunk, 3, "simple")
    lengths = [12, 9, 5]  # 0, 3 and 7 padding tokens
    width = 12
    rows = [torch.randint(3, 37, (n,)) for n in lengths]
    ids = torch.full((3, width), 1)
    mask = torch.zeros(3, width, dtype=torch.long)
    for b, (row, n) in enumerate(zip(rows, lengths)):
        ids[b, width - n :] = row
        mask[b, width - n :] = 1
    batched = decode(model, ids, 8, mask)
    assert torch.isfinite(batched).all()
    for b, (row, n) in enumerate(zip(rows, lengths)):
        alone, _ = model(row[None])
        torch.testing.assert_close(batched[b, width - n :], alone[0], rtol=1e-9, atol=1e-9)


def test_state_can_be_reordered_for_beam_search():
    model = make_lm("softmax", 4, 3, "simple")
    ids = torch.randint(0, 37, (2, 7))
    _, states = model(ids[:, :6], use_cache=True)
    swapped = [s.index_select(torch.tensor([1, 0])) for s in states]
    logits, _ = model(ids[[1, 0], 6:], states=swapped)
    full, _ = model(ids[[1, 0]])
    torch.testing.assert_close(logits[:, 0], full[:, 6], rtol=1e-9, atol=1e-9)
