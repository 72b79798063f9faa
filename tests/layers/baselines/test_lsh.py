"""Reformer's LSH attention (mega_lra/layers/baselines/lsh.py) against a float64 loop reference
written from the paper's definition: hash with the same rotations, sort each round's real tokens
by (bucket, position), cut into chunks, let each query see its chunk and the one before, and take
one dense softmax over the union of those keys (self -1e5, everything else -inf). LRA's as-coded
variant has its own loop reference: rounds sorted together, per-copy softmax, rounds combined by
their logsumexps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mega_lra.layers.baselines.lsh import LSHAttention, lsh_attend, lsh_buckets
from mega_lra.layers.baselines.projections import merge_heads
from tests.models.cost_probe import growth, largest_intermediate, training_step

FIXTURES = Path(__file__).parent / "fixtures" / "reformer"


def _buckets(x: torch.Tensor, rotation: torch.Tensor) -> list[int]:
    """x (L, d), rotation (d, n_buckets/2) -> one bucket per row."""
    proj = x @ rotation
    return torch.cat([proj, -proj], dim=-1).argmax(dim=-1).tolist()


def reference(qk, v, mask, rotations, chunk, scale, *, lra=False) -> torch.Tensor:
    """(B, h, L, d) float64. Padded query rows are left at 0."""
    b_size, heads, length, d = qk.shape
    rounds = rotations.shape[2]
    qk, v, rotations = qk.double(), v.double(), rotations.double()
    out = torch.zeros(b_size, heads, length, d, dtype=torch.float64)
    for b in range(b_size):
        for h in range(heads):
            x, val = qk[b, h], v[b, h]
            buckets = [_buckets(x, rotations[h, :, r]) for r in range(rounds)]
            if lra:
                out[b, h] = _lra_reference(x, val, buckets, chunk, scale)
                continue
            real = [i for i in range(length) if mask[b, i]]
            allowed = torch.zeros(length, length, dtype=torch.bool)
            for r in range(rounds):
                order = sorted(real, key=lambda i, r=r: (buckets[r][i], i))
                chunk_of = {i: rank // chunk for rank, i in enumerate(order)}
                last = math.ceil(len(real) / chunk) - 1
                for i in real:
                    k = chunk_of[i]
                    back = k - 1 if k > 0 else last
                    for j in real:
                        if chunk_of[j] == k or (back != k and chunk_of[j] == back):
                            allowed[i, j] = True
            keys = x / x.norm(dim=-1, keepdim=True)
            logits = x @ keys.T * scale
            logits.fill_diagonal_(-1e5)
            logits[~allowed] = -math.inf
            out[b, h, real] = torch.softmax(logits[real], dim=-1) @ val
    return out


def _lra_reference(x, val, buckets, chunk, scale) -> torch.Tensor:
    length, rounds = x.size(0), len(buckets)
    copies = sorted((r, buckets[r][i], i) for r in range(rounds) for i in range(length))
    chunk_of = {(r, i): rank // chunk for rank, (r, _, i) in enumerate(copies)}
    n_chunks = len(copies) // chunk
    out = torch.zeros_like(x[:, :1].expand(length, val.size(1)))
    for i in range(length):
        outs, norms = [], []
        for r in range(rounds):
            k = chunk_of[(r, i)]
            keys = [j for (_, j), c in chunk_of.items() if c in (k, (k - 1) % n_chunks)]
            s = torch.stack([x[i] @ x[j] * scale for j in keys])
            outs.append(torch.softmax(s, 0) @ val[keys])
            norms.append(torch.logsumexp(s, 0))
        weights = torch.softmax(torch.stack(norms), 0)
        out[i] = sum(w * o for w, o in zip(weights, outs))
    return out


def _inputs(seed=0, b=3, h=2, length=24, d=4, n_buckets=6, rounds=2):
    gen = torch.Generator().manual_seed(seed)
    qk = torch.randn(b, h, length, d, generator=gen, dtype=torch.float64)
    v = torch.randn(b, h, length, d, generator=gen, dtype=torch.float64)
    rot = torch.randn(h, d, rounds, n_buckets // 2, generator=gen, dtype=torch.float64)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 17:] = False  # right padding
    mask[2, 3:] = False  # a single real chunk: no look-back
    mask[0, 5:8] = False  # padding inside the row
    return qk, v, rot, mask


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_matches_dense_reference_of_the_same_buckets(rounds):
    qk, v, rot, mask = _inputs(rounds=rounds)
    got = lsh_attend(qk, v, rot, 4, 0.5, mask)
    want = reference(qk, v, mask, rot, 4, 0.5)
    assert torch.isfinite(got).all()
    assert torch.allclose(got[mask[:, None].expand_as(got[..., 0])], want[mask[:, None].expand_as(
        want[..., 0])], atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("rounds", [1, 2])
def test_lra_variant_matches_its_reference(rounds):
    qk, v, rot, _ = _inputs(rounds=rounds, n_buckets=4, length=16)
    got = lsh_attend(qk, v, rot, 4, 2.0, None, lra=True)
    want = reference(qk, v, None, rot, 4, 2.0, lra=True)
    assert torch.allclose(got, want, atol=1e-10)


def _module(**kw) -> LSHAttention:
    torch.manual_seed(0)
    fields = dict(num_hashes=2, bucket_size=4, hash_seed=3)
    fields.update(kw)
    return LSHAttention(12, 3, fields.pop("qkv_size", None), 0.0, fields.pop("max_length", None),
                        **fields).double().eval()  # fmt: skip


def _x(b=2, length=13, width=12, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, width, generator=gen, dtype=torch.float64)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 9:] = False
    return x, mask


def test_module_is_projections_around_the_reference():
    module = _module(qkv_size=18)
    x, mask = _x()
    chunk, n_buckets, padded = module.layout(13)
    assert (chunk, n_buckets, padded) == (4, 8, 16)
    rot = module.rotations(n_buckets, x.device, x.dtype)
    qk, v = module.proj.queries(x), module.proj.values(x)
    d = module.head_size
    assert d == 6
    want = module.proj.output(reference(qk, v, mask, rot, chunk, 1 / math.sqrt(d)))
    got = module(x, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-10)


def test_lra_quirks_module():
    module = _module(lra_quirks=True, qkv_size=18)  # qkv_size ignored: d = 12 / 3
    assert module.head_size == 4 and module.proj.out is None
    x, mask = _x()
    chunk, n_buckets, padded = module.layout(13)
    assert (chunk, n_buckets, padded) == (2, 10, 20)
    rot = module.rotations(n_buckets, x.device, x.dtype)
    assert torch.equal(rot[0], rot[1])  # one rotation for every head
    again = _module(lra_quirks=True, hash_seed=None).train().rotations(10, x.device, x.dtype)
    assert torch.equal(rot, again)
    pad = torch.nn.functional.pad
    qk = pad(module.proj.queries(x), (0, 0, 0, padded - 13))
    v = pad(module.proj.values(x), (0, 0, 0, padded - 13))
    want = merge_heads(reference(qk, v, None, rot, chunk, 2.0, lra=True)[:, :, :13])
    assert torch.allclose(module(x, mask), want, atol=1e-10)


@pytest.mark.parametrize("name", ["lsh_h2_l32", "lsh_h3_l48"])
def test_matches_transformers_lsh_self_attention(name):
    """transformers' LSHSelfAttention (tools/baseline_reference/reformer_fixtures.py): one round,
    no padding, unit keys without a further 1/sqrt(d) (scale 1), the same rotations."""
    ref = torch.load(FIXTURES / f"{name}.pt")
    x, heads, n_buckets = ref["x"], ref["num_attention_heads"], ref["num_buckets"]
    length, hidden = x.shape[1:]
    module = LSHAttention(hidden, heads, ref["query_key"].size(0), 0.0, length,
                          num_buckets=n_buckets).double()  # fmt: skip
    assert module.layout(length) == (ref["chunk_length"], n_buckets, length)
    with torch.no_grad():
        module.proj.query.weight.copy_(ref["query_key"])
        module.proj.value.weight.copy_(ref["value"])
    qk, v = module.proj.queries(x), module.proj.values(x)
    assert torch.equal(lsh_buckets(qk, ref["rotations"]), ref["buckets"].view(2, heads, 1, length))
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    y = lsh_attend(qk, v, ref["rotations"], ref["chunk_length"], 1.0, mask)
    # transformers' keys are x / sqrt(mean(x^2) + 1e-6) / sqrt(d): unit up to that eps (~1e-5 here;
    # a wrong scale or window is off by > 0.1)
    assert torch.allclose(merge_heads(y), ref["y"], atol=5e-5)


def test_factorised_hash_is_the_product_of_two_angular_hashes():
    qk, _, _, _ = _inputs()
    rot = torch.randn(2, 4, 1, 3 + 2, dtype=torch.float64)
    got = lsh_buckets(qk, rot, (6, 4))
    want = lsh_buckets(qk, rot[..., :3]) + 6 * lsh_buckets(qk, rot[..., 3:])
    assert torch.equal(got, want) and got.max() < 24
    module = LSHAttention(8, 2, None, 0.0, 16384)
    chunk, n_buckets, _ = module.layout(16384)
    assert (chunk, n_buckets, module.factors(n_buckets, chunk)) == (64, 512, (24, 22))
    assert module.factors(128, 64) == (128,)


def test_layouts():
    assert LSHAttention(8, 2, None, 0.0, 4000, num_buckets=10).layout(4000) == (400, 10, 4000)
    assert LSHAttention(8, 2, None, 0.0, 4000, num_buckets=10).layout(1000) == (400, 10, 1200)
    assert LSHAttention(8, 2, None, 0.0, 4000).layout(4000) == (64, 126, 4032)
    assert LSHAttention(8, 2, None, 0.0, None).layout(1000) == (64, 32, 1024)
    lra = LSHAttention(8, 2, None, 0.0, 4000, lra_quirks=True)
    assert lra.layout(1000) == (101, 10, 1010) and lra.layout(1001) == (101, 10, 1010)


@pytest.mark.parametrize("kw", [dict(), dict(num_buckets=4), dict(num_hashes=1)])
def test_padding_does_not_change_real_tokens(kw):
    module = _module(max_length=64, **kw)
    x, mask = _x()
    longer = torch.cat([x, torch.randn(2, 30, 12, dtype=torch.float64)], dim=1)
    long_mask = torch.cat([mask, torch.zeros(2, 30, dtype=torch.bool)], dim=1)
    short, long = module(x, mask), module(longer, long_mask)
    assert torch.isfinite(long).all()
    assert torch.allclose(short[mask], long[:, :13][mask], atol=1e-12)


def test_rotations_redrawn_in_training_fixed_in_eval():
    module = _module(hash_seed=None).train()
    x, mask = _x()
    assert not torch.allclose(module(x, mask), module(x, mask))
    module.eval()
    assert torch.equal(module(x, mask), module(x, mask))
    state = module.state_dict()
    other = _module(hash_seed=None)
    torch.manual_seed(123)
    other = LSHAttention(12, 3, None, 0.0, None, num_hashes=2, bucket_size=4).double().eval()
    assert not torch.equal(other(x, mask), module(x, mask))
    other.load_state_dict(state)
    assert torch.equal(other(x, mask), module(x, mask))  # eval rotations saved with the weights
    seeded = _module(hash_seed=5).train()
    assert torch.equal(seeded(x, mask), seeded(x, mask))


def test_gradcheck():
    module = _module(bucket_size=3)
    x, mask = _x(length=10)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: module(t, mask)[mask], (x,), fast_mode=True)
    qk, v, rot, mask = _inputs(rounds=2)
    qk.requires_grad_(True)
    v.requires_grad_(True)
    fn = lambda a, b: lsh_attend(a, b, rot, 4, 0.5, mask)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (qk, v), fast_mode=True)


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_no_dense_matrix_and_linear_growth(lra_quirks):
    torch.manual_seed(0)
    if lra_quirks:  # LRA's 10 chunks of L/10: quadratic, never L x L
        module = LSHAttention(8, 2, None, 0.0, None, lra_quirks=True)
        numel, _ = largest_intermediate(training_step(module, 4096, 8))
        chunk, n_buckets, padded = module.layout(4096)
        assert numel == 2 * n_buckets * chunk * 2 * chunk == 2 * padded**2 // 5
        return
    module = LSHAttention(8, 2, None, 0.0, None, num_hashes=2, bucket_size=32)
    largest, saved, (numel, _) = growth(module, 8)
    assert largest <= 4.5 and saved <= 4.5, (largest, saved)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_hashes=0), "num_hashes"),
        (dict(bucket_size=0), "bucket_size"),
        (dict(num_buckets=5), "num_buckets"),
        (dict(num_buckets=0), "num_buckets"),
        (dict(hash_seed=-1), "hash_seed"),
        (dict(qkv_size=10), "qkv_size"),
    ],
)
def test_bad_fields_raise(kw, match):
    qkv = kw.pop("qkv_size", None)
    with pytest.raises(ValueError, match=match):
        LSHAttention(12, 4, qkv, 0.0, None, **kw)
    with pytest.raises(ValueError, match="attention_dropout_prob"):
        LSHAttention(12, 4, None, 1.0, None)
