"""The classifier's pooling and retrieval-feature options (the S4 recipes' `pooling: last` and
NLI retrieval head, `lra_baselines.md` §3.6): what each computes, written out from the hidden
states; padding invariance; the defaults unchanged."""

import pytest
import torch

from mega_lra.models import LRAClassifier
from mega_lra.models.heads import last_token_pool, masked_mean_pool, nli_features
from tests.models.test_classifier import batch_of, build


def test_last_token_pool_takes_each_rows_last_real_position():
    hidden = torch.randn(3, 7, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1])
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    pooled = last_token_pool(hidden, mask, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(pooled[i], hidden[i, n - 1])
    torch.testing.assert_close(last_token_pool(hidden, mask), pooled)  # lengths from the mask


def test_nli_features_are_u_v_product_difference():
    u, v = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(nli_features(u, v), torch.cat([u, v, u * v, u - v], dim=-1))


@pytest.mark.parametrize("kind", ["mega", "transformer"])
def test_last_pooling_feeds_the_last_real_hidden_state_to_the_head(kind):
    torch.manual_seed(0)
    model = build(kind, pooling="last")
    batch = batch_of([torch.randint(3, 30, (n,)) for n in (11, 4, 7)], width=16)
    keep = batch["attention_mask"].bool()
    hidden = model.backbone(model.embed(batch["input_ids"], keep), keep)
    last = torch.stack([hidden[i, n - 1] for i, n in enumerate(batch["lengths"].tolist())])
    torch.testing.assert_close(model(batch), model.classifier(last), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_does_not_change_logits_with_either_pooling(pooling):
    torch.manual_seed(1)
    model = build("mega", pooling=pooling)
    rows = [torch.randint(3, 30, (n,)) for n in (19, 6, 2)]
    padded = model(batch_of(rows, width=32))
    for i, r in enumerate(rows):
        torch.testing.assert_close(padded[i], model(batch_of([r]))[0], rtol=1e-10, atol=1e-10)


def test_nli_retrieval_head_reads_u_v_product_and_difference():
    torch.manual_seed(2)
    model = build("mega_chunk", head="retrieval", retrieval_features="nli")
    assert model.classifier.dense.in_features == 4 * 16
    b1 = batch_of([torch.randint(3, 30, (n,)) for n in (17, 9)], width=24)
    b2 = batch_of([torch.randint(3, 30, (n,)) for n in (6, 20)], width=24)
    pair = {k: torch.stack([b1[k], b2[k]], dim=1) for k in b1}
    u = model.encode(b1["input_ids"], b1["attention_mask"], b1["lengths"])
    v = model.encode(b2["input_ids"], b2["attention_mask"], b2["lengths"])
    expected = model.classifier(torch.cat([u, v, u * v, u - v], dim=-1))
    torch.testing.assert_close(model(pair), expected, rtol=1e-12, atol=1e-12)


def test_defaults_are_mean_pooling_and_concatenated_pair():
    torch.manual_seed(3)
    default = build("transformer")
    assert (default.pooling, default.retrieval_features) == ("mean", "concat")
    torch.manual_seed(3)
    explicit = build("transformer", pooling="mean", retrieval_features="concat")
    batch = batch_of([torch.randint(3, 30, (n,)) for n in (9, 4)])
    assert torch.equal(default(batch), explicit(batch))  # bit for bit
    keep = batch["attention_mask"].bool()
    hidden = default.backbone(default.embed(batch["input_ids"], keep), keep)
    pooled = masked_mean_pool(hidden, keep, batch["lengths"])
    assert torch.equal(default(batch), default.classifier(pooled))


@pytest.mark.parametrize(
    "key,value", [("pooling", "max"), ("retrieval_features", "product"), ("pooling", None)]
)
def test_bad_pooling_options_are_named(key, value):
    with pytest.raises(ValueError, match=f"model.{key}="):
        LRAClassifier(
            "mega_lra.models.transformer.TransformerBackbone",
            hidden_size=8,
            num_classes=2,
            vocab_size=10,
            **{key: value},
        )
