"""Which objective a backbone gets, the causal leak test, the per-position head, and the
transfer into the classifier (bit-exact tensors, key accounting, refusals by name)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mega_lra.models import build_classifier
from mega_lra.pretraining.model import PretrainModel
from mega_lra.pretraining.objectives import is_causal, resolve_objective
from mega_lra.pretraining.transfer import (
    PretrainedMismatchError,
    account_keys,
    load_pretrained,
    model_facts,
    read_pretrained,
)
from mega_lra.training.config import compose
from tests.helpers import perturb_, tiny

TOKENS = SimpleNamespace(
    name="listops", num_classes=10, input_kind="tokens", head="pooled", vocab_size=18, pad_id=0,
    max_length=40, SPT_MASK_RATE=0.10, SPT_PIXEL_LOSS="l1",
)  # fmt: skip
PIXELS = SimpleNamespace(
    name="pathfinder", num_classes=2, input_kind="pixels", head="pooled", vocab_size=None,
    pad_id=0, max_length=40, SPT_MASK_RATE=0.5, SPT_PIXEL_LOSS="ce",
)  # fmt: skip


def classifier(model: str, task=TOKENS, *extra: str) -> nn.Module:
    cfg = compose([f"model={model}", *tiny(model), "model.dropout_prob=0.0", *extra])
    return build_classifier(cfg.model, task)


CAUSAL_MEGA = ("+model.is_decoder=true", "model.bidirectional=false")


@pytest.mark.parametrize(
    "model,extra,causal",
    [
        ("transformer", (), False),
        ("mega_chunk", (), False),
        ("mega", CAUSAL_MEGA, True),
        ("s4_v1", (), True),
        ("s4_v2", (), False),
        ("s4d", ("model.bidirectional=false",), True),
    ],
)
def test_the_backbone_decides_the_objective(model, extra, causal):
    net = classifier(model, TOKENS, *extra)
    assert is_causal(net.backbone) is causal
    assert resolve_objective({"objective": "auto"}, TOKENS, net.backbone).kind == (
        "causal" if causal else "masked"
    )
    wrong = "masked" if causal else "causal"
    with pytest.raises(ValueError, match=f"spt.objective={wrong}"):
        resolve_objective({"objective": wrong}, TOKENS, net.backbone)


def test_a_backbone_declares_causality_with_an_attribute_or_describe():
    class Flagged(nn.Module):
        causal = True

    class Described(nn.Module):
        def describe(self):
            return {"causal": True}

    assert is_causal(Flagged()) and is_causal(Described()) and not is_causal(nn.Identity())


def test_rates_are_validated_and_default_to_the_tasks():
    backbone = classifier("transformer").backbone
    assert resolve_objective({}, TOKENS, backbone).rate == 0.10
    for bad in (0, 0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="spt.mask_rate"):
            resolve_objective({"mask_rate": bad}, TOKENS, backbone)
    pix = resolve_objective({}, PIXELS, classifier("transformer", PIXELS).backbone)
    assert (pix.rate, pix.target, pix.outputs, pix.monitor) == (0.5, "grey", 256, "val/masked_acc")
    l1 = resolve_objective({"pixel_loss": "l1"}, PIXELS, classifier("transformer", PIXELS).backbone)
    assert (l1.outputs, l1.mode, l1.monitor) == (1, "min", "val/masked_mae")
    causal = classifier("s4_v1").backbone
    with pytest.raises(ValueError, match="causal objective"):
        resolve_objective({"mask_rate": 0.2}, TOKENS, causal)


def test_task_classes_hold_the_papers_rates_and_pixel_losses():
    from tasks.image import ImageTask
    from tasks.listops import ListOpsTask
    from tasks.pathfinder import PathfinderTask
    from tasks.pathx import PathXTask
    from tasks.retrieval import RetrievalTask
    from tasks.text import TextTask

    rates = {c: c.SPT_MASK_RATE for c in (ListOpsTask, TextTask, RetrievalTask, ImageTask)}
    assert list(rates.values()) == [0.10, 0.15, 0.15, 0.50]
    assert PathfinderTask.SPT_MASK_RATE == PathXTask.SPT_MASK_RATE == 0.50
    assert ImageTask.SPT_PIXEL_LOSS == "l1" and PathXTask.SPT_PIXEL_LOSS == "ce"


@pytest.mark.parametrize("model,extra", [("s4_v1", ("model.normalization_type=layernorm",)),
                                         ("mega", CAUSAL_MEGA)])  # fmt: skip
def test_the_causal_objective_leaks_nothing_from_the_future(model, extra):
    net = classifier(model, TOKENS, *extra)
    objective = resolve_objective({}, TOKENS, net.backbone)
    spt = perturb_(PretrainModel(net, objective)).eval()
    ids = torch.randint(3, 18, (2, 24), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones(2, 24, dtype=torch.long)}
    base = spt(batch)
    for t in (0, 7, 22):
        changed = ids.clone()
        changed[:, t + 1 :] = torch.randint(3, 18, changed[:, t + 1 :].shape)
        out = spt({**batch, "input_ids": changed})
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5), t
    # while a bidirectional model does see the future (the test can fail)
    bi = perturb_(PretrainModel(classifier("transformer"), resolve_objective({}, TOKENS,
                  classifier("transformer").backbone))).eval()  # fmt: skip
    changed = ids.clone()
    changed[:, 10:] = 3
    assert not torch.allclose(bi({**batch, "input_ids": changed})[:, :9], bi(batch)[:, :9])


def test_the_head_predicts_every_position_and_the_mask_token_is_its_own_vector():
    net = classifier("transformer")
    objective = resolve_objective({}, TOKENS, net.backbone)
    spt = PretrainModel(net, objective).eval()
    ids = torch.randint(3, 18, (2, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    assert spt(batch).shape == (2, 12, 18)
    masked = ids.clone()
    masked[:, 4] = objective.mask_id
    h = spt.embed({"input_ids": masked}, torch.ones(2, 12, dtype=torch.bool))
    expected = spt.embed({"input_ids": ids}, torch.ones(2, 12, dtype=torch.bool))
    pos_only = expected[:, 4] - spt.encoder(ids)[:, 4]
    assert torch.allclose(h[:, 4], spt.mask_embedding * spt.encoder.scale + pos_only, atol=1e-6)


def spt_state(model: str, task, tmp_path, *extra: str, seed: int = 3):
    """A pretraining model (perturbed) and its checkpoint file, read back with the safe loader."""
    torch.manual_seed(seed)
    net = classifier(model, task, *extra)
    spt = perturb_(PretrainModel(net, resolve_objective({}, task, net.backbone)), seed=seed)
    path = tmp_path / "spt.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in spt.state_dict().items()},
            "spt": {"model": model_facts(spt), "objective": {"kind": "masked"}},
            "global_step": 7,
        },
        path,
    )
    return spt, read_pretrained(path)


@pytest.mark.parametrize("model,task", [("mega_chunk", TOKENS), ("transformer", PIXELS),
                                        ("s4_v2", PIXELS)])  # fmt: skip
def test_every_encoder_and_backbone_tensor_loads_bit_exactly_and_the_head_is_new(
    model, task, tmp_path
):
    spt, ckpt = spt_state(model, task, tmp_path)
    torch.manual_seed(11)
    fresh = classifier(model, task)
    head_before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("class")}
    record = load_pretrained(fresh, ckpt, copy=True)
    assert record["checkpoint_step"] == 7 and record["loaded_tensors"] > 0
    saved = spt.state_dict()
    target = fresh.state_dict()
    shared = [k for k in target if not k.startswith("classifier.")]
    assert shared and all(torch.equal(target[k], saved[k]) for k in shared)
    assert any(k.startswith("backbone.") for k in shared)
    for k, v in head_before.items():
        assert torch.equal(target[k], v)  # the head keeps its fresh initialisation
    if task is PIXELS:  # the mask column is dropped: W_ft = W_pt[:, :-1], bias equal
        assert "mask_channel" in saved and "mask_channel" not in target
        assert torch.equal(target["encoder.weight"], saved["encoder.weight"])
        assert torch.equal(target["encoder.bias"], saved["encoder.bias"])


def test_the_key_accounting_allows_exactly_the_heads_and_the_mask_vectors(tmp_path):
    spt, _ = spt_state("mega_chunk", TOKENS, tmp_path)
    target = classifier("mega_chunk").state_dict()
    saved = spt.state_dict()
    assert account_keys(target, saved) == []
    assert {k for k in saved if k not in target} == {
        "mask_embedding", "lm_head.weight", "lm_head.bias"
    }  # fmt: skip
    assert {k for k in target if k not in saved} == {k for k in target if k.startswith("classif")}
    broken = dict(saved)
    dropped = next(k for k in broken if k.startswith("backbone."))
    del broken[dropped]
    broken["backbone.extra.weight"] = torch.zeros(1)
    problems = account_keys(target, broken)
    assert problems == [
        f"missing from the checkpoint: {dropped}", "not in this model: backbone.extra.weight"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "other,word",
    [
        (("model.num_hidden_layers=2",), "architecture: num_hidden_layers"),
        (CAUSAL_MEGA, "direction: pretrained bidirectional"),
    ],
)
def test_a_different_architecture_or_direction_is_refused_by_name(other, word, tmp_path):
    _, ckpt = spt_state("mega", TOKENS, tmp_path)
    with pytest.raises(PretrainedMismatchError, match=word) as err:
        load_pretrained(classifier("mega", TOKENS, *other), ckpt)
    if "num_hidden_layers" in word:  # and every offending key is listed, in one error
        assert "missing from the checkpoint: backbone.layers.1." in str(err.value)


def test_a_different_vocabulary_or_model_is_refused_by_name(tmp_path):
    _, ckpt = spt_state("transformer", TOKENS, tmp_path)
    text = SimpleNamespace(**{**vars(TOKENS), "vocab_size": 259})
    with pytest.raises(PretrainedMismatchError, match="vocabulary: 18 ids pretrained, 259"):
        load_pretrained(classifier("transformer", text), ckpt)
    with pytest.raises(PretrainedMismatchError, match="architecture: pretrained .*Transformer"):
        load_pretrained(classifier("mega_chunk"), ckpt)
