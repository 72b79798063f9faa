"""mega-lra registered with transformers v5's Auto classes, pipelines and Trainer.

transformers v5 has no Mega, and cannot live in the project's env without changing what it
pins, so it has its own cached env (`tools.hf_reference.envs.TRANSFORMERS_V5`, built on first use,
about a minute and a half). This module makes tiny perturbed checkpoints here, runs
`tools/hf_reference/transformers_v5_checks.py` once in that env (Auto classes, pipelines, HF's
doc examples with only the imports changed, a short Trainer run), and compares what transformers
v5 produced with mega-lra run directly on the same checkpoints. When that env cannot be built
(no package registry), every test here is skipped with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mega_lra
from tests.helpers import perturb_, tiny_config
from tools.hf_reference import envs as hf_reference

SCRIPT = Path(__file__).resolve().parents[2] / "tools/hf_reference/transformers_v5_checks.py"
WORDS = [
    *("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    *("the", "capital", "of", "france", "is", "paris", "hello", "my", "dog", "cute", "who"),
    *("was", "jim", "henson", "a", "nice", "puppet", "big", "small", "red"),
]
V = len(WORDS)
SEQ_LABELS = {0: "NEG", 1: "POS"}
TOKEN_LABELS = {0: "A", 1: "B", 2: "C"}
CASES = {
    "model": (mega_lra.MegaModel, {}),
    "masked_lm": (mega_lra.MegaForMaskedLM, {}),
    "causal_lm": (mega_lra.MegaForCausalLM, {"is_decoder": True, "bidirectional": False}),
    "seq_cls": (mega_lra.MegaForSequenceClassification, {"id2label": SEQ_LABELS}),
    "multiple_choice": (mega_lra.MegaForMultipleChoice, {}),
    "token_cls": (mega_lra.MegaForTokenClassification, {"id2label": TOKEN_LABELS}),
    "qa": (mega_lra.MegaForQuestionAnswering, {}),
}


def _prepare(work: Path) -> None:
    for i, (name, (cls, fields)) in enumerate(CASES.items()):
        model = perturb_(cls(tiny_config(vocab_size=V, **fields)), 0.3, seed=i).eval()
        model.save_pretrained(work / name)
    (work / "vocab.json").write_text(json.dumps(WORDS))
    gen = torch.Generator().manual_seed(0)
    save_file(
        {
            "input_ids": torch.randint(5, V, (2, 7), generator=gen),
            "attention_mask": torch.tensor([[1] * 7, [0, 0] + [1] * 5]),
            "mc_input_ids": torch.randint(5, V, (2, 3, 6), generator=gen),
            "train_input_ids": torch.randint(5, V, (16, 6), generator=gen),
            "train_labels": torch.randint(0, 2, (16,), generator=gen),
        },
        str(work / "inputs.safetensors"),
    )


@pytest.fixture(scope="module")
def v5(tmp_path_factory):
    """Run the v5 checks once per test session (shared by pytest-xdist workers via a lock)."""
    try:
        hf_reference.ensure_env(spec=hf_reference.TRANSFORMERS_V5)
    except hf_reference.HFReferenceError as err:
        pytest.skip(f"transformers v5 could not be installed in its own env here: {err}")
    base = tmp_path_factory.getbasetemp()
    # under pytest-xdist each worker has its own basetemp inside this session's folder
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    work = shared / "transformers-v5-checks"
    with open(shared / "transformers-v5-checks.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (work / "report.json").is_file():
            work.mkdir(exist_ok=True)
            _prepare(work)
            proc = hf_reference.run_in_env(
                hf_reference.TRANSFORMERS_V5, [SCRIPT, work], timeout=600
            )
            assert proc.returncode == 0, f"{SCRIPT.name} failed:\n{proc.stderr[-4000:]}"
    report = json.loads((work / "report.json").read_text())
    return work, report, load_file(str(work / "v5_outputs.safetensors"))


def _no_error(report: dict, step: str) -> None:
    assert step not in report["errors"], (
        f"{step} raised in transformers v5:\n{report['errors'][step]}"
    )


def _load(work: Path, name: str):
    return CASES[name][0].from_pretrained(work / name)


def test_import_mega_lra_does_not_import_transformers(v5):
    assert v5[1]["transformers_after_import_mega_lra"] is False


def test_transformers_v5_alone_does_not_know_mega(v5):
    _, report, _ = v5
    assert int(report["versions"]["transformers"].split(".")[0]) >= 5
    assert report["unregistered"] != "loaded" and "mega" in report["unregistered"]


def test_auto_config_returns_mega_lra_config(v5):
    _, report, _ = v5
    _no_error(report, "auto_config")
    assert report["auto_config"] == {
        "class": "mega_lra.hf.configuration.MegaConfig",
        "is_mega_lra": True,
        "id2label": {"0": "NEG", "1": "POS"},
        "num_labels": 2,
    }


@pytest.mark.parametrize("name", list(CASES))
def test_auto_model_classes_return_mega_lra_models(v5, name):
    work, report, tensors = v5
    _no_error(report, f"auto_model.{name}")
    got = report["auto_models"][name]
    assert got["mega_lra_class"] == CASES[name][0].__name__
    assert got["is_mega_lra"] and not got["training"]
    if name == "causal_lm":  # mega-lra's class plus a GenerationConfig for pipelines
        assert got["class"] == "mega_lra.hf.auto.MegaForCausalLM"
    else:
        assert got["class"] == f"mega_lra.hf.modeling.{CASES[name][0].__name__}"
    model = _load(work, name)
    inputs = load_file(str(work / "inputs.safetensors"))
    with torch.no_grad():
        if name == "multiple_choice":
            out = model(input_ids=inputs["mc_input_ids"])
        else:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    key = {"model": "last_hidden_state", "qa": "start_logits"}.get(name, "logits")
    torch.testing.assert_close(tensors[f"auto.{name}"], out[key])


def test_auto_classes_pass_dtype_through(v5):
    _, report, _ = v5
    _no_error(report, "auto_dtype")
    assert report["auto_dtype"] == {
        "float16": "torch.float16",
        "saved_torch_dtype": "float16",
        "auto": "torch.float16",  # dtype="auto" (v5's name) and torch_dtype="auto" read config.json
        "legacy_auto": "torch.float16",
        "default": "torch.float32",  # mega-lra keeps transformers 4.x's default
    }


def _logits(work: Path, name: str, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return _load(work, name)(torch.tensor([ids])).logits[0]


def test_fill_mask_pipeline_ranks_mega_lra_predictions(v5):
    work, report, _ = v5
    _no_error(report, "pipeline.fill-mask")
    got = report["pipelines"]["fill-mask"]
    ids = got["input_ids"]
    position = ids.index(WORDS.index("<mask>"))
    probs = _logits(work, "masked_lm", ids)[position].softmax(-1)
    top = probs.topk(3)
    assert [r["token"] for r in got["result"]] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([r["score"] for r in got["result"]]), top.values)


def test_text_classification_pipeline_uses_id2label(v5):
    work, report, _ = v5
    _no_error(report, "pipeline.text-classification")
    got = report["pipelines"]["text-classification"]
    probs = _logits(work, "seq_cls", got["input_ids"]).softmax(-1)
    assert got["label"] == SEQ_LABELS[int(probs.argmax())]
    assert got["score"] == pytest.approx(float(probs.max()), rel=1e-5)


def test_token_classification_pipeline_labels_each_word(v5):
    work, report, _ = v5
    _no_error(report, "pipeline.token-classification")
    got = report["pipelines"]["token-classification"]
    probs = _logits(work, "token_cls", got["input_ids"]).softmax(-1)
    assert [r["index"] for r in got["result"]] == list(range(1, len(got["input_ids"]) - 1))
    for r in got["result"]:
        assert r["entity"] == TOKEN_LABELS[int(probs[r["index"]].argmax())]
        assert r["score"] == pytest.approx(float(probs[r["index"]].max()), rel=1e-5)


def test_feature_extraction_pipeline_gives_last_hidden_state(v5):
    work, report, tensors = v5
    _no_error(report, "pipeline.feature-extraction")
    ids = report["pipelines"]["feature-extraction"]["input_ids"]
    with torch.no_grad():
        hidden = _load(work, "model")(torch.tensor([ids])).last_hidden_state[0]
    torch.testing.assert_close(tensors["pipeline.features"], hidden)


def test_text_generation_pipeline_decodes_greedily_with_the_state(v5):
    work, report, _ = v5
    _no_error(report, "pipeline.text-generation")
    got = report["pipelines"]["text-generation"]
    assert got["class"] == "MegaForCausalLM"
    model = _load(work, "causal_lm")
    ids = torch.tensor([got["input_ids"]])
    expected = model.generate(ids, max_new_tokens=5)[0].tolist()
    assert got["generated_token_ids"] == expected


def test_doc_example_causal_lm_from_an_encoder_checkpoint(v5):
    _, report, _ = v5
    _no_error(report, "example.causal_lm_from_encoder")
    got = report["examples"]["causal_lm_from_encoder"]
    assert got["config_class"] == "MegaConfig"
    assert got["is_decoder"] is True and got["bidirectional"] is False
    assert got["logits_shape"] == [1, len(got["input_ids"][0]), V]


def test_doc_example_masked_lm_prediction_and_loss(v5):
    work, report, _ = v5
    _no_error(report, "example.masked_lm")
    got = report["examples"]["masked_lm"]
    ids, labels = got["input_ids"][0], torch.tensor(got["labels"][0])
    logits = _logits(work, "masked_lm", ids)
    position = ids.index(WORDS.index("<mask>"))
    assert int(labels[position]) == WORDS.index("paris")
    assert (labels[torch.arange(len(ids)) != position] == -100).all()
    assert got["predicted_id"] == int(logits[position].argmax())
    assert got["predicted"].strip() == WORDS[got["predicted_id"]]
    expected = torch.nn.functional.cross_entropy(logits[position][None], labels[position][None])
    assert got["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_trainer_trains_and_evaluates_a_mega_lra_model(v5):
    work, report, _ = v5
    _no_error(report, "trainer.sequence_classification")
    got = report["trainer"]
    assert got["changed_parameters"] > 0
    assert torch.isfinite(torch.tensor(got["train_loss"]))
    # Trainer's eval loss is the mean cross-entropy of the trained weights (saved after training)
    trained = mega_lra.MegaForSequenceClassification.from_pretrained(work / "trained")
    inputs = load_file(str(work / "inputs.safetensors"))
    with torch.no_grad():
        logits = trained(inputs["train_input_ids"]).logits
    expected = torch.nn.functional.cross_entropy(logits, inputs["train_labels"])
    assert got["eval_loss"] == pytest.approx(float(expected), rel=1e-4)
    before = mega_lra.MegaForSequenceClassification.from_pretrained(work / "seq_cls")
    with torch.no_grad():
        untrained = torch.nn.functional.cross_entropy(
            before(inputs["train_input_ids"]).logits, inputs["train_labels"]
        )
    assert float(expected) != pytest.approx(float(untrained), rel=1e-6)  # it did train
