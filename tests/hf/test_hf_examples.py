"""HF's Mega examples (the docstrings of transformers 4.41's Mega heads), run on mega-lra.

Each example's code is transformers' own with only the import lines changed, on a locally saved
stand-in for `mnaylor/mega-base-wikitext` (an MLM without the LM dense layer, as that checkpoint
is). transformers is not installed here, so `AutoTokenizer` is a small word tokenizer with the
RoBERTa specials and a split of "henson" into two pieces, so that the QA example's target
positions 14 and 15 are "nice puppet" as with RoBERTa's tokenizer. The same examples with the
real `AutoTokenizer`/`AutoConfig` of transformers v5 run in tests/hf/test_hf_transformers_v5.py.
Each test then checks the example's results against values computed independently.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

import mega_lra
from tests.helpers import perturb_, tiny_config

VOCAB = [
    *("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    *("the", "capital", "of", "france", "is", "paris", "hello", "my", "dog", "cute"),
    *("who", "was", "jim", "hen", "son", "a", "nice", "puppet", "?", ",", "."),
]


class _Encoding(dict):
    """What a tokenizer returns: a dict with attribute access (`inputs.input_ids`)."""

    __getattr__ = dict.__getitem__


class AutoTokenizer:
    """Stand-in for transformers.AutoTokenizer (not installable beside this project)."""

    mask_token_id = VOCAB.index("<mask>")

    @classmethod
    def from_pretrained(cls, _path):
        return cls()

    def _ids(self, text: str) -> list[int]:
        ids = []
        for word in re.findall(r"<mask>|\w+|[^\w\s]", text.lower()):
            while word:  # longest known prefix first ("henson" -> "hen" + "son")
                piece = next(word[:n] for n in range(len(word), 0, -1) if word[:n] in VOCAB)
                ids.append(VOCAB.index(piece))
                word = word[len(piece) :]
        return ids

    def __call__(self, text, text_pair=None, return_tensors=None):
        ids = [0, *self._ids(text), 2]
        if text_pair is not None:
            ids += [2, *self._ids(text_pair), 2]
        return _Encoding(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
        )

    def decode(self, ids, skip_special_tokens=False):
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        ids = [ids] if isinstance(ids, int) else ids
        return "".join(f" {VOCAB[i]}" for i in ids if not (skip_special_tokens and i < 5))


@pytest.fixture
def checkpoint(tmp_path):
    """A stand-in for mnaylor/mega-base-wikitext: MaskedLM, no LM dense layer, perturbed."""
    config = tiny_config(vocab_size=len(VOCAB), add_lm_hidden_dense_layer=False)
    model = perturb_(mega_lra.MegaForMaskedLM(config), 0.5)
    model.save_pretrained(tmp_path / "mega-base-wikitext")
    return str(tmp_path / "mega-base-wikitext")


def test_masked_lm_example(checkpoint):
    from mega_lra import MegaForMaskedLM

    # --- transformers' example, imports changed ---
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = MegaForMaskedLM.from_pretrained(checkpoint)

    inputs = tokenizer("The capital of France is <mask>.", return_tensors="pt")

    with torch.no_grad():
        logits = model(**inputs).logits

    # retrieve index of <mask>
    mask_token_index = (inputs.input_ids == tokenizer.mask_token_id)[0].nonzero(as_tuple=True)[0]

    predicted_token_id = logits[0, mask_token_index].argmax(axis=-1)
    predicted = tokenizer.decode(predicted_token_id)

    labels = tokenizer("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    # mask labels of non-<mask> tokens
    labels = torch.where(inputs.input_ids == tokenizer.mask_token_id, labels, -100)

    outputs = model(**inputs, labels=labels)
    # --- end of the example ---

    ids = inputs.input_ids[0]
    position = int(mask_token_index)
    assert ids[position] == VOCAB.index("<mask>") and position == 6
    reference = model.double()(ids[None]).logits[0, position]  # float64 recomputation
    assert int(predicted_token_id) == int(reference.argmax())
    assert predicted == " " + VOCAB[int(reference.argmax())]
    expected_loss = -torch.log_softmax(reference, -1)[VOCAB.index("paris")]
    assert outputs.loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)


def test_causal_lm_from_an_encoder_checkpoint_example(checkpoint):
    from mega_lra import MegaConfig as AutoConfig
    from mega_lra import MegaForCausalLM

    # --- transformers' example, imports changed ---
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    config = AutoConfig.from_pretrained(checkpoint)
    config.is_decoder = True
    config.bidirectional = False
    with pytest.warns(UserWarning, match="other shapes in the checkpoint, newly initialised"):
        model = MegaForCausalLM.from_pretrained(
            checkpoint, config=config, ignore_mismatched_sizes=True
        )

    inputs = tokenizer("Hello, my dog is cute", return_tensors="pt")
    outputs = model(**inputs)

    prediction_logits = outputs.logits
    # --- end of the example ---

    length = inputs.input_ids.shape[1]
    assert prediction_logits.shape == (1, length, len(VOCAB))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = mega_lra.MegaForMaskedLM.from_pretrained(checkpoint)
    ours, theirs = model.state_dict(), encoder.state_dict()
    for key, value in ours.items():
        if "ema_gate" in key and "residual_weight" not in key:  # unidirectional: H rows, fresh
            assert value.shape[0] == 16 and theirs[key].shape[0] == 32
        elif key.startswith("mega."):
            torch.testing.assert_close(value, theirs[key], rtol=0, atol=0, msg=key)
    assert model.lm_head.weight is model.mega.embedding_layer.word_embeddings.weight
    assert torch.equal(model.lm_head.bias, torch.zeros(len(VOCAB)))  # newly initialised
    # it is causal now: changing the last token leaves the earlier logits alone
    changed = inputs.input_ids.clone()
    changed[0, -1] = VOCAB.index("dog")
    with torch.no_grad():
        again = model(changed).logits
    # float32 FFTs over a changed input round the other positions differently (~1e-5); a leak of
    # the future token would move them by O(1)
    torch.testing.assert_close(
        again[0, :-1], prediction_logits[0, :-1].detach(), rtol=1e-4, atol=1e-4
    )


def test_sequence_classification_examples(checkpoint):
    from mega_lra import MegaForSequenceClassification

    # --- transformers' single-label example, imports changed ---
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classifier is new: a warning lists it
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = MegaForSequenceClassification.from_pretrained(checkpoint)

        inputs = tokenizer("Hello, my dog is cute", return_tensors="pt")

        with torch.no_grad():
            logits = model(**inputs).logits

        predicted_class_id = logits.argmax().item()
        label = model.config.id2label[predicted_class_id]

        # To train a model on `num_labels` classes, pass `num_labels=num_labels` to from_pretrained
        num_labels = len(model.config.id2label)
        model = MegaForSequenceClassification.from_pretrained(checkpoint, num_labels=num_labels)

        labels = torch.tensor([1])
        loss = model(**inputs, labels=labels).loss
    # --- end of the example ---

    assert label == f"LABEL_{predicted_class_id}" and num_labels == 2
    with torch.no_grad():
        expected = F.cross_entropy(model(**inputs).logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    # --- transformers' multi-label example, imports changed ---
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = MegaForSequenceClassification.from_pretrained(
            checkpoint, problem_type="multi_label_classification"
        )

        inputs = tokenizer("Hello, my dog is cute", return_tensors="pt")

        with torch.no_grad():
            logits = model(**inputs).logits

        predicted_class_ids = torch.arange(0, logits.shape[-1])[
            torch.sigmoid(logits).squeeze(dim=0) > 0.5
        ]

        # To train a model on `num_labels` classes, pass `num_labels=num_labels` to from_pretrained
        num_labels = len(model.config.id2label)
        model = MegaForSequenceClassification.from_pretrained(
            checkpoint, num_labels=num_labels, problem_type="multi_label_classification"
        )

        labels = torch.sum(
            torch.nn.functional.one_hot(
                predicted_class_ids[None, :].clone(), num_classes=num_labels
            ),
            dim=1,
        ).to(torch.float)
        loss = model(**inputs, labels=labels).loss
    # --- end of the example ---

    assert model.config.problem_type == "multi_label_classification"
    assert labels.shape == (1, 2)
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_question_answering_example(checkpoint):
    from mega_lra import MegaForQuestionAnswering

    # --- transformers' example, imports changed ---
    with pytest.warns(UserWarning, match=r"newly initialised: \['qa_outputs.bias'"):
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = MegaForQuestionAnswering.from_pretrained(checkpoint)

    question, text = "Who was Jim Henson?", "Jim Henson was a nice puppet"

    inputs = tokenizer(question, text, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)

    answer_start_index = outputs.start_logits.argmax()
    answer_end_index = outputs.end_logits.argmax()

    predict_answer_tokens = inputs.input_ids[0, answer_start_index : answer_end_index + 1]
    answer = tokenizer.decode(predict_answer_tokens, skip_special_tokens=True)

    # target is "nice puppet"
    target_start_index = torch.tensor([14])
    target_end_index = torch.tensor([15])

    outputs = model(**inputs, start_positions=target_start_index, end_positions=target_end_index)
    loss = outputs.loss
    # --- end of the example ---

    ids = inputs.input_ids[0]
    assert tokenizer.decode(ids[14:16]) == " nice puppet"  # as with RoBERTa's tokenizer
    start, end = outputs.start_logits[0], outputs.end_logits[0]
    assert int(answer_start_index) == int(start.argmax())
    assert isinstance(answer, str)
    expected = -(torch.log_softmax(start, -1)[14] + torch.log_softmax(end, -1)[15]) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
