"""The one LRA classifier (original `LRAModel` + `MegaLRAEncoder`) on every backbone: pooling,
head, encoders, padding invariance, retrieval, the Transformer baseline's masking, the backbone
contract's errors and `describe()`."""

import math

import pytest
import torch
import torch.nn.functional as F

from mega_lra.models import (
    LRAClassifier,
    MegaBackbone,
    RealNumberEncoder,
    TokenEncoder,
    TransformerBackbone,
    count_parameters,
    masked_mean_pool,
)
from tests.helpers import perturb_

MEGA = dict(
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=32,
    nffn_hidden_size=32,
    shared_representation_size=8,
    ema_projection_size=4,
    truncation=None,
    relative_positional_bias="simple",
    relative_bias_layout="original",
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
)
XFM = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    ffn_hidden_size=24,
    dropout_prob=0.0,
    attention_dropout_prob=0.0,
)


XFM_ENCODER = dict(embedding_std=0.02, scale_embedding=True, positions="sinusoidal")


def build(kind, input_kind="tokens", head="pooled", **overrides):
    common = dict(num_classes=3, input_kind=input_kind, head=head, max_length=64)
    if input_kind == "tokens":
        common["vocab_size"] = 30
    if kind == "transformer":
        model = LRAClassifier(TransformerBackbone, **common, **{**XFM_ENCODER, **XFM, **overrides})
    else:
        chunk = dict(use_chunking=True, chunk_size=8) if kind == "mega_chunk" else {}
        fields = {**MEGA, **chunk, **overrides}
        model = LRAClassifier(
            "mega_lra.models.mega.MegaBackbone", classifier_hidden_size=32, **common, **fields
        )
    model = model.double().eval()
    perturb_(model)  # away from the init's special values (zero biases, unit norms)
    return model


def batch_of(rows, input_kind="tokens", width=None):
    """Right-padded batch from a list of 1-D tensors, as tasks.collate makes it."""
    lengths = torch.tensor([len(r) for r in rows])
    width = width or int(lengths.max())
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    if input_kind == "tokens":
        x = torch.zeros(len(rows), width, dtype=torch.long)
    else:
        x = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
    key = "input_ids" if input_kind == "tokens" else "inputs"
    return {key: x, "attention_mask": mask, "lengths": lengths}


def test_masked_mean_pool_averages_real_positions_only():
    hidden = torch.randn(3, 7, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1])
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    pooled = masked_mean_pool(hidden * mask[..., None], mask, lengths)
    for i, n in enumerate(lengths.tolist()):
        expected = sum(hidden[i, t] for t in range(n)) / n
        torch.testing.assert_close(pooled[i], expected)


@pytest.mark.parametrize("kind", ["mega", "mega_chunk", "transformer"])
@pytest.mark.parametrize("input_kind", ["tokens", "pixels"])
def test_padding_does_not_change_logits(kind, input_kind):
    torch.manual_seed(0)
    model = build(kind, input_kind)
    if input_kind == "tokens":
        rows = [torch.randint(3, 30, (n,)) for n in (21, 13, 5)]
    else:
        rows = [torch.randn(n, dtype=torch.float64) for n in (21, 13, 5)]
    padded = model(batch_of(rows, input_kind, width=32))  # 32: more padding than needed
    for i, r in enumerate(rows):
        alone = model(batch_of([r], input_kind))
        torch.testing.assert_close(padded[i], alone[0], rtol=1e-10, atol=1e-10)


def test_mega_classifier_is_encoder_backbone_mean_pool_then_head():
    torch.manual_seed(1)
    model = build("mega", normalize_before_mega=True, normalize_before_ffn=True)
    assert model.backbone.final_norm is not None  # pre-norm -> the original's final norm
    batch = batch_of([torch.randint(3, 30, (n,)) for n in (12, 7)])
    ids, mask, lengths = batch["input_ids"], batch["attention_mask"], batch["lengths"]
    # independent composition from the layers: no positions, no scaling of the embedding
    x = model.encoder.embed.weight[ids] * mask[..., None]
    for block in model.backbone.layers:
        x, _ = block(x, mask.bool())
    x = model.backbone.final_norm(x, mask.bool()) * mask[..., None]
    pooled = x.sum(1) / lengths[:, None]
    head = model.classifier
    expected = F.gelu(pooled @ head.dense.weight.T + head.dense.bias) @ head.out.weight.T
    torch.testing.assert_close(model(batch), expected, rtol=1e-10, atol=1e-12)
    assert head.out.bias is None


def test_retrieval_concatenates_the_two_documents_of_the_shared_encoder():
    torch.manual_seed(2)
    model = build("mega_chunk", head="retrieval")
    docs1 = [torch.randint(3, 30, (n,)) for n in (17, 9)]
    docs2 = [torch.randint(3, 30, (n,)) for n in (6, 20)]
    b1, b2 = batch_of(docs1, width=24), batch_of(docs2, width=24)
    pair = {k: torch.stack([b1[k], b2[k]], dim=1) for k in b1}  # (B, 2, L) as the collator
    u = model.encode(b1["input_ids"], b1["attention_mask"], b1["lengths"])
    v = model.encode(b2["input_ids"], b2["attention_mask"], b2["lengths"])
    expected = model.classifier(torch.cat([u, v], dim=-1))
    torch.testing.assert_close(model(pair), expected, rtol=1e-12, atol=1e-12)
    assert model.classifier.dense.in_features == 2 * 16


def test_encoders():
    torch.manual_seed(3)
    real = RealNumberEncoder(6).double()
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(real(x), x[..., None] * real.weight + real.bias)
    tokens = TokenEncoder(4000, 256, pad_id=0)
    weight = tokens.embed.weight.detach()
    assert torch.all(weight[0] == 0)
    assert weight[1:].std().item() == pytest.approx(256**-0.5, rel=0.02)  # N(0, d^-1/2)
    assert torch.equal(tokens(torch.tensor([[5, 0]]))[0, 0], weight[5])  # no sqrt(d) scaling
    fairseq_style = TokenEncoder(10, 16, std=0.02, scale=math.sqrt(16))
    assert torch.equal(fairseq_style(torch.tensor([3]))[0], 4 * fairseq_style.embed.weight[3])


def test_transformer_attends_to_zero_valued_pixels_but_not_to_padding():
    torch.manual_seed(4)
    model = build("transformer", "pixels")
    x = torch.randn(1, 10, dtype=torch.float64)
    x[0, 3] = 0.0  # a black pixel is data, not padding
    x.requires_grad_(True)
    batch = {"inputs": x, "attention_mask": torch.ones(1, 10, dtype=torch.long)}
    keep = batch["attention_mask"].bool()
    hidden = model.backbone(model.embed(x, keep), keep)
    (grad,) = torch.autograd.grad(hidden[0, 7].sum(), x)
    assert grad[0, 3].abs() > 0  # position 7 sees the zero pixel
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 8:] = False
    hidden = model.backbone(model.embed(x, mask), mask)
    (grad,) = torch.autograd.grad(hidden[0, :8].sum(), x)
    assert torch.all(grad[0, 8:] == 0)  # padding reaches no real position


def test_every_parameter_gets_a_gradient():
    # DDP without find_unused_parameters needs this
    for kind in ("mega", "mega_chunk", "transformer"):
        model = build(kind).train()
        batch = batch_of([torch.randint(3, 30, (n,)) for n in (20, 11)])
        model(batch).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, (kind, missing)


def test_parameter_counts():
    model = build("mega")
    embedding = model.encoder.embed.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    assert count_parameters(model, exclude_token_embedding=True) == total - embedding
    tied = build("transformer", tie_layer_weights=True)
    untied = build("transformer")
    layer = sum(p.numel() for p in untied.backbone.layers[0].parameters())
    assert count_parameters(untied) - count_parameters(tied) == layer  # one shared layer


def test_unknown_model_keys_are_named():
    with pytest.raises(ValueError, match="model.chunk_sise: not a field of MegaBackbone"):
        LRAClassifier(MegaBackbone, num_classes=2, vocab_size=10, chunk_sise=8)
    with pytest.raises(ValueError, match="model.truncation: not a field of TransformerBackbone"):
        LRAClassifier(TransformerBackbone, num_classes=2, vocab_size=10, truncation=8)
    with pytest.raises(ValueError, match="model.vocab_size"):
        LRAClassifier(MegaBackbone, num_classes=2, input_kind="tokens", vocab_size=None)
    with pytest.raises(ValueError, match="model.backbone='nowhere.Nothing'"):
        LRAClassifier("nowhere.Nothing", num_classes=2, vocab_size=10)
    with pytest.raises(ValueError, match="model.positions='rotary'"):
        LRAClassifier(MegaBackbone, num_classes=2, vocab_size=10, positions="rotary")
    with pytest.raises(ValueError, match="positions=learned needs the task's max_length"):
        LRAClassifier(MegaBackbone, num_classes=2, vocab_size=10, positions="learned")


def test_learned_positions_add_row_t_at_column_t():
    """LRA's learned positions: a (max_length, d) table N(0, 0.02), its row t added to the
    embedding at column t, whatever the padding; longer inputs are refused by name."""
    torch.manual_seed(0)
    model = LRAClassifier(
        MegaBackbone, hidden_size=16, num_classes=2, vocab_size=10, max_length=6,
        positions="learned", intermediate_size=16, shared_representation_size=8,
        ema_projection_size=2, num_hidden_layers=1,
    )  # fmt: skip
    table = model.positions.weight
    assert table.shape == (6, 16) and 0.01 < float(table.detach().std()) < 0.03
    ids = torch.tensor([[3, 4, 5, 0]])
    mask = ids != 0
    expected = model.encoder(ids) + table[:4]
    torch.testing.assert_close(model.embed(ids, mask), expected)
    with pytest.raises(ValueError, match="exceeds the learned positions' max_length 6"):
        model.embed(torch.ones(1, 7, dtype=torch.long), torch.ones(1, 7, dtype=torch.bool))


def test_classifier_head_weights_are_xavier_uniform_as_the_original():
    """Both Linears of the head: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (fairseq's
    `Linear()` helper for the last one), not PyTorch's default bound 1/sqrt(fan_in)."""
    torch.manual_seed(5)
    model = LRAClassifier(
        MegaBackbone, hidden_size=80, num_classes=10, vocab_size=30, classifier_hidden_size=160
    )  # ListOps' sizes: 160 -> 10
    out = model.classifier.out.weight
    bound = math.sqrt(6 / (160 + 10))
    assert out.abs().max() <= bound
    assert out.abs().max() > 0.9 * bound  # 1,600 draws reach near the bound
    assert out.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)  # U(-a, a): a/sqrt 3


def test_describe_reports_the_backbone_and_its_identity_fields():
    mega = build("mega_chunk", attention_activation="laplace").describe()
    assert mega["backbone"] == "mega_lra.models.mega.MegaBackbone"
    assert (mega["mixer"], mega["attention_activation"], mega["chunk_size"]) == (
        "mega",
        "laplace",
        8,
    )
    assert mega["ema_projection_size"] == 4
    xfm = build("transformer").describe()
    assert xfm["mixer"] == "transformer" and "ema_projection_size" not in xfm

    class Bare(torch.nn.Module):  # the minimal contract: no describe(), no pad_multiple
        def __init__(self, hidden_size):
            super().__init__()
            self.proj = torch.nn.Linear(hidden_size, hidden_size)

        def forward(self, x, mask):
            return self.proj(x)

    bare = LRAClassifier(Bare, "Bare", 8, num_classes=2, vocab_size=10)
    assert bare.describe() == {
        "backbone": f"{Bare.__module__}.{Bare.__qualname__}",
        "label": "Bare",
    }
    assert bare.pad_multiple == 0


def test_final_layernorm_option_normalises_the_backbone_output_before_pooling():
    torch.manual_seed(6)
    model = build("transformer", final_layernorm=True)
    batch = batch_of([torch.randint(3, 30, (n,)) for n in (9, 4)])
    keep = batch["attention_mask"].bool()
    hidden = model.backbone(model.embed(batch["input_ids"], keep), keep)
    normed = (
        torch.nn.functional.layer_norm(
            hidden, (16,), model.final_norm.weight, model.final_norm.bias
        )
        * keep[..., None]
    )
    pooled = normed.sum(1) / batch["lengths"][:, None]
    torch.testing.assert_close(model(batch), model.classifier(pooled))
