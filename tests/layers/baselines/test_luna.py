"""Luna's pack/unpack attention and backbone: values against a float64 two-step dense softmax
written from the paper's equations (one sample and one head at a time, only the real keys),
padding invariance including the dynamic projection, gradients, linear cost and errors."""

import math

import pytest
import torch

from mega_lra.layers.baselines.luna import LunaAttention
from mega_lra.models.luna import LunaBackbone
from tests.models.cost_probe import growth

WIDTH, HEADS = 8, 2


def affine(linear, t):
    return t @ linear.weight.double().T + linear.bias.double()


def naive(attn, x, p, mask, p_mask):
    """Y_b = W_o [softmax(q_h k_h^T) v_h]_h with k, v from C_p = [softmax(pq_h pk_h^T) pv_h]_h;
    pq and q scaled by (D/h)^-1/2; only real tokens as pack keys, only unmasked slots as unpack
    keys (they are left out, not masked). float64."""
    h, d = attn.num_heads, attn.head_size
    pack_value = attn.pack_value or attn.pack_key
    value = attn.value or attn.key
    ys, packs = [], []
    for b in range(x.size(0)):
        xb, pb = x[b].double(), p[b].double()
        real, slots = mask[b], p_mask[b]
        pq = affine(attn.pack_query, pb) / math.sqrt(d)
        pk, pv = affine(attn.pack_key, xb[real]), affine(pack_value, xb[real])
        packed = torch.cat(
            [
                torch.softmax(pq[:, c] @ pk[:, c].T, dim=-1) @ pv[:, c]
                for c in (slice(j * d, (j + 1) * d) for j in range(h))
            ],
            dim=-1,
        )  # (l, D)
        q = affine(attn.query, xb) / math.sqrt(d)
        k, v = affine(attn.key, packed[slots]), affine(value, packed[slots])
        y = torch.cat(
            [
                torch.softmax(q[:, c] @ k[:, c].T, dim=-1) @ v[:, c]
                for c in (slice(j * d, (j + 1) * d) for j in range(h))
            ],
            dim=-1,
        )
        ys.append(affine(attn.out, y))
        packs.append(packed)
    return torch.stack(ys), torch.stack(packs)


def backbone(**kwargs):
    fields = dict(
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        ffn_hidden_size=16,
        dropout_prob=0.0,
        attention_dropout_prob=0.0,
        projected_length=6,
    )
    return LunaBackbone(WIDTH, **{**fields, **kwargs}).eval()


@pytest.mark.parametrize("tie_kv", [False, True])
def test_pack_unpack_matches_two_step_dense_softmax(tie_kv):
    attn = LunaAttention(WIDTH, HEADS, 0.0, tie_kv=tie_kv).double()
    x, p = torch.randn(3, 10, WIDTH, dtype=torch.float64), torch.randn(3, 5, WIDTH).double()
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 3:] = False
    p_mask = torch.arange(5)[None, :] < mask.sum(1, keepdim=True)
    y, packed = attn(x, p, mask, p_mask)
    y_ref, packed_ref = naive(attn, x, p, mask, p_mask)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(packed, packed_ref, rtol=1e-10, atol=1e-10)


def test_untied_has_seven_projections_and_luna_init():
    attn = LunaAttention(64, 4, 0.0)
    linears = [m for m in attn.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7 and len(list(LunaAttention(64, 4, 0.0, tie_kv=True).children())) == 5
    bound = math.sqrt(6.0 / 128)
    assert attn.query.weight.abs().max() <= bound / math.sqrt(2)
    assert attn.out.weight.abs().max() > bound / math.sqrt(2)  # plain Xavier: the full bound
    assert torch.count_nonzero(attn.out.bias) == 0
    p = LunaBackbone(256, 1, 4, 64, projected_length=256).projected_embeddings
    assert abs(p.std().item() - 256**-0.5) < 0.05 * 256**-0.5


def test_padding_does_not_change_real_tokens():
    model = backbone()
    x = torch.randn(2, 9, WIDTH)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 4:] = False
    padded_x = torch.cat([x, torch.randn(2, 7, WIDTH)], dim=1)  # junk in the padding
    padded_mask = torch.cat([mask, torch.zeros(2, 7, dtype=torch.bool)], dim=1)
    y, y_padded = model(x, mask), model(padded_x, padded_mask)
    assert torch.isfinite(y_padded).all()
    torch.testing.assert_close(y_padded[:, :9][mask], y[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("projected_length", [3, 6, 32])
def test_dynamic_projection_equals_the_sample_alone(projected_length):
    """A sample in a padded batch gives what it gives alone and unpadded, with P cut to
    min(l, its length) and no slot masked: the batch's other lengths do not matter."""
    model = backbone(projected_length=projected_length).double()
    x = torch.randn(3, 11, WIDTH, dtype=torch.float64)
    lengths = torch.tensor([11, 4, 7])
    mask = torch.arange(11)[None, :] < lengths[:, None]
    y = model(x, mask)
    for b, n in enumerate(lengths.tolist()):
        alone = model(x[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(y[b, :n], alone[0], rtol=1e-10, atol=1e-10)
    p, p_mask = model.projected_inputs(mask)
    assert p.size(0) == min(projected_length, 11)
    assert torch.equal(p_mask.sum(1), lengths.clamp(max=projected_length))


def test_static_projection_uses_every_slot():
    model = backbone(projected_length=5, dynamic_projection=False)
    p, p_mask = model.projected_inputs(torch.tensor([[True, True, False]]))
    assert p.size(0) == 5 and bool(p_mask.all())
    assert model(torch.randn(1, 3, WIDTH), torch.tensor([[True, True, False]])).shape == (1, 3, 8)


def test_fully_padded_sample_stays_finite():
    model = backbone()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :3] = True
    assert torch.isfinite(model(torch.randn(2, 5, WIDTH), mask)).all()


def test_gradcheck():
    attn = LunaAttention(4, 2, 0.0).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    p_mask = torch.tensor([[True] * 3, [True] * 2 + [False]])
    assert torch.autograd.gradcheck(lambda a, b: attn(a, b, mask, p_mask), (x, p), fast_mode=True)
    model = LunaBackbone(4, 1, 2, 4, 0.0, 0.0, projected_length=3).double()
    assert torch.autograd.gradcheck(lambda a: model(a, mask), (x,), fast_mode=True)


def test_cost_grows_linearly_in_length():
    model = LunaBackbone(8, 1, 2, 8, 0.0, 0.0, projected_length=16)
    largest_ratio, saved_ratio, (largest, op) = growth(model, 8)
    assert largest_ratio <= 4.5, (largest_ratio, op)
    assert saved_ratio <= 4.5
    assert largest < 4096 * 4096 // 16, op  # nothing close to L x L


def test_errors():
    with pytest.raises(ValueError, match="exceeds max_length 8"):
        backbone(max_length=8)(torch.randn(1, 9, WIDTH), torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_attention_heads"):
        LunaBackbone(8, num_attention_heads=3)
    with pytest.raises(ValueError, match="projected_length=0"):
        LunaBackbone(8, num_attention_heads=2, projected_length=0)
    with pytest.raises(ValueError, match="num_hidden_layers=0"):
        LunaBackbone(8, num_hidden_layers=0, num_attention_heads=2)


def test_describe():
    info = backbone().describe()
    assert info["mixer"] == "luna" and info["projected_length"] == 6
    assert info["prenorm"] is False and info["dynamic_projection"] and not info["tie_kv"]
