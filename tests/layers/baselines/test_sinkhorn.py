"""Sparse Sinkhorn attention against float64 references written from the definitions: the
paper's method as an explicit loop over blocks and queries (plain-domain Sinkhorn on the real
blocks only), and LRA's as-coded attention as two dense masked softmaxes (strided groups; chunk
sums). Plus padding invariance, Gumbel noise only in training, gradients and cost."""

from __future__ import annotations

import math

import pytest
import torch

from mega_lra.layers.baselines.sinkhorn import SinkhornAttention, sinkhorn
from tests.models.cost_probe import growth

D, H = 12, 3


def heads(layer: SinkhornAttention, x: torch.Tensor) -> list[torch.Tensor]:
    p = layer.proj
    return [
        (x @ w.weight.T).view(x.size(0), -1, H, D // H).transpose(1, 2)  # (B, h, L, d)
        for w in (p.query, p.key, p.value)
    ]


def paper_reference(layer: SinkhornAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    bs, length = layer.block_size, x.size(1)
    n = -(-length // bs)
    x = torch.cat([x, x.new_zeros(x.size(0), n * bs - length, D)], 1)
    m = torch.cat([mask, mask.new_zeros(x.size(0), n * bs - length)], 1)
    q, k, v = heads(layer, x)
    y = torch.zeros_like(q)
    for b in range(x.size(0)):
        mb = m[b].view(n, bs)
        real = [j for j in range(n) if mb[j].any()]
        for h in range(H):
            kb = (k[b, h] * m[b, :, None]).view(n, bs, -1)  # padded keys zeroed
            vb = (v[b, h] * m[b, :, None]).view(n, bs, -1)
            summaries = torch.stack([kb[j].sum(0) for j in real])  # (n_real, d)
            s = torch.exp(layer.sort_net(summaries)[:, real] / layer.temperature)
            for _ in range(layer.sinkhorn_iterations):
                s = s / s.sum(1, keepdim=True)
                s = s / s.sum(0, keepdim=True)
            for i in real:
                sorted_k = sum(s[i, j] * kb[j] for j in real)  # (b, d)
                sorted_v = sum(s[i, j] * vb[j] for j in real)
                sorted_real = sum(s[i, j] * mb[j].double() for j in real) > 0
                keys, values = torch.cat([sorted_k, kb[i]]), torch.cat([sorted_v, vb[i]])
                valid = torch.cat([sorted_real, mb[i]])
                for t in range(i * bs, (i + 1) * bs):
                    scores = keys @ q[b, h, t] / math.sqrt(D // H)
                    y[b, h, t] = scores.masked_fill(~valid, -math.inf).softmax(0) @ values
    return layer.proj.out(y.transpose(1, 2).reshape(x.size(0), -1, D))[:, :length]


@pytest.mark.parametrize(("length", "block", "iterations"), [(37, 5, 3), (20, 4, 0), (9, 16, 5)])
def test_paper_mode_matches_an_explicit_block_loop(length, block, iterations):
    torch.manual_seed(0)
    layer = SinkhornAttention(
        D, H, None, 0.0, 64, block_size=block, sinkhorn_iterations=iterations, temperature=0.6
    )
    layer = layer.double().eval()
    x = torch.randn(2, length, D, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length - length // 2 :] = False
    got = layer(x, mask)
    want = paper_reference(layer, x, mask)
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-10, atol=1e-10)
    assert torch.isfinite(got).all()


def test_sinkhorn_balancing_is_doubly_stochastic():
    torch.manual_seed(1)
    p = sinkhorn(torch.randn(2, 6, 6, dtype=torch.float64), 200)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    torch.testing.assert_close(p.sum(-2), torch.ones(2, 6, dtype=torch.float64))


def lra_reference(layer: SinkhornAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LRA as coded, from its definition: token t = s n + g (n = L / b) attends (a) to its strided
    group {t' = t mod n} with pair mask m[g b + s] and m[g b + s'], and (b) to the b chunk sums
    C_s' = sum of keys s' n ... s' n + n - 1, allowed iff some chunk k has m[k b + s] and
    m[k b + s']; a row with nothing allowed is uniform; y = (a) + (b)."""
    bs, length = layer.block_size, x.size(1)
    n = length // bs
    q, k, v = heads(layer, x)
    t = torch.arange(length)
    group, member = t % n, t // n
    chunks = mask.view(-1, n, bs)  # chunks[k, s] = m[k b + s]

    def attend(keys, values, allowed, fallback):
        flat = ~allowed.any(-1)  # (B, L)
        scores = (q @ keys.transpose(-1, -2) / math.sqrt(D // H)).masked_fill(
            flat[:, None, :, None], 0.0
        )
        allowed = torch.where(flat[:, :, None], fallback, allowed)
        return scores.masked_fill(~allowed[:, None], -math.inf).softmax(-1) @ values

    same = (group[:, None] == group[None, :])[None]
    own = mask[:, group * bs + member]  # (B, L)
    local = attend(k, v, same & own[:, :, None] & own[:, None, :], same)
    c_k = k.view(x.size(0), H, bs, n, -1).sum(3)  # (B, h, b, d): C_s
    c_v = v.view(x.size(0), H, bs, n, -1).sum(3)
    pair = (chunks[:, :, :, None] & chunks[:, :, None, :]).any(1)  # (B, b, b)
    sums = attend(c_k, c_v, pair[:, member], True)  # query t uses row s = t // n
    y = (local + sums).transpose(1, 2).reshape(x.size(0), length, D)
    return layer.proj.out(y)


def test_lra_quirks_match_strided_groups_plus_chunk_sums():
    torch.manual_seed(2)
    layer = SinkhornAttention(D, H, None, 0.0, block_size=4, lra_quirks=True).double().eval()
    x = torch.randn(2, 24, D, dtype=torch.float64)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 9:] = False
    torch.testing.assert_close(
        layer(x, mask), lra_reference(layer, x, mask), rtol=1e-10, atol=1e-10
    )


def test_lra_quirks_sort_net_gets_no_gradient():
    torch.manual_seed(3)
    layer = SinkhornAttention(D, H, None, 0.0, block_size=4, lra_quirks=True).double()
    x = torch.randn(2, 24, D, dtype=torch.float64)
    layer(x, torch.ones(2, 24, dtype=torch.bool)).square().sum().backward()
    assert layer.sort_net.weight.grad.abs().max() < 1e-12 * layer.proj.key.weight.grad.abs().max()


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(4)
    layer = SinkhornAttention(D, H, None, 0.0, 64, block_size=4).eval()
    x = torch.randn(2, 13, D)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[0, 10:] = False
    longer = torch.cat([x, 100 * torch.randn(2, 11, D)], 1)
    longer[0, 10:13] = 100.0
    longer_mask = torch.cat([mask, torch.zeros(2, 11, dtype=torch.bool)], 1)
    torch.testing.assert_close(
        layer(longer, longer_mask)[:, :13][mask], layer(x, mask)[mask], rtol=1e-6, atol=1e-6
    )


def test_gumbel_noise_only_in_training():
    torch.manual_seed(5)
    layer = SinkhornAttention(D, H, None, 0.0, 64, block_size=4)
    x, mask = torch.randn(1, 16, D), torch.ones(1, 16, dtype=torch.bool)
    assert not torch.allclose(layer(x, mask), layer(x, mask))
    layer.eval()
    torch.testing.assert_close(layer(x, mask), layer(x, mask), rtol=0, atol=0)


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_gradients_match_finite_differences(lra_quirks):
    torch.manual_seed(6)
    layer = SinkhornAttention(6, 2, None, 0.0, 8, block_size=2, lra_quirks=lra_quirks)
    layer = layer.double().eval()
    x = torch.randn(1, 8, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 7 + [False]])
    assert torch.autograd.gradcheck(lambda t: layer(t, mask), (x,))


@pytest.mark.parametrize("lra_quirks", [False, True])
def test_cost_grows_linearly(lra_quirks):
    layer = SinkhornAttention(8, 2, None, 0.0, 4096, block_size=64, lra_quirks=lra_quirks)
    largest, saved, (numel, op) = growth(layer, 8)
    assert largest <= 4.5 and saved <= 4.5, (largest, saved, op)
    assert numel <= 2 * 4096 * 2 * 64  # heads x L x 2b block scores, never L x L


def test_bad_fields_and_lengths_raise():
    with pytest.raises(ValueError, match="block_size"):
        SinkhornAttention(D, H, None, 0.0, 64, block_size=0)
    with pytest.raises(ValueError, match="temperature"):
        SinkhornAttention(D, H, None, 0.0, 64, temperature=0.0)
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        SinkhornAttention(D, H, None, 0.0, 64, sinkhorn_iterations=-1)
    with pytest.raises(ValueError, match="max_num_blocks"):
        SinkhornAttention(D, H, None, 0.0, None)
    layer = SinkhornAttention(D, H, None, 0.0, 16, block_size=4)
    with pytest.raises(ValueError, match="max_num_blocks=4"):
        layer(torch.randn(1, 17, D), torch.ones(1, 17, dtype=torch.bool))
    quirky = SinkhornAttention(D, H, None, 0.0, block_size=4, lra_quirks=True)
    with pytest.raises(ValueError, match="multiple of model.block_size=4"):
        quirky(torch.randn(1, 10, D), torch.ones(1, 10, dtype=torch.bool))
