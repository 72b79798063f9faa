"""Exercise mega-lra's registration with transformers v5 (runs inside the transformers-v5 env).

Usage::

    transformers_v5_checks.py WORKDIR

WORKDIR is prepared by ``tests/hf/test_hf_transformers_v5.py`` in the project's own env: one Mega
checkpoint folder per class (``model``, ``masked_lm``, ``causal_lm``, ``seq_cls``,
``multiple_choice``, ``token_cls``, ``qa``), ``vocab.json`` (a word list: id = position) and
``inputs.safetensors`` (``input_ids``, ``attention_mask``; ``mc_input_ids`` for multiple choice).
This script never judges: it records what transformers v5 does with them and the test compares
that with mega-lra run directly. It writes

- ``WORKDIR/v5_outputs.safetensors``: tensors (Auto-class forwards, pipeline features, Trainer
  results), and
- ``WORKDIR/report.json``: classes returned, pipeline results, token ids the tokenizer produced,
  Trainer numbers, and for every step that raised, its traceback under ``errors``.

A word-level tokenizer over ``vocab.json`` (RoBERTa's special tokens: <s>=0, <pad>=1, </s>=2,
<unk>=3, <mask>=4) is saved into each checkpoint folder first, so ``AutoTokenizer`` and the
pipelines load everything from the folder, offline.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

REPORT: dict = {"errors": {}}
TENSORS: dict = {}


def step(name):
    """Run the decorated function now; record its traceback instead of stopping on error."""

    def run(fn):
        try:
            fn()
        except Exception:  # recorded for the test to show
            REPORT["errors"][name] = traceback.format_exc()
        return fn

    return run


def main(work: Path) -> None:
    import mega_lra

    # the core library must not pull transformers in
    REPORT["transformers_after_import_mega_lra"] = "transformers" in sys.modules

    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    REPORT["versions"] = {"transformers": transformers.__version__, "torch": torch.__version__}
    torch.manual_seed(0)
    words = json.loads((work / "vocab.json").read_text())
    inputs = load_file(str(work / "inputs.safetensors"))
    folders = {p.name: p for p in work.iterdir() if (p / "config.json").is_file()}

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    for folder in folders.values():
        fast.save_pretrained(folder)

    @step("unregistered")
    def _unregistered():
        try:
            transformers.AutoConfig.from_pretrained(folders["model"])
            REPORT["unregistered"] = "loaded"
        except (ValueError, KeyError) as err:
            REPORT["unregistered"] = f"{type(err).__name__}: {err}"

    import mega_lra.hf_auto  # noqa: F401  (registers)

    @step("auto_config")
    def _auto_config():
        config = transformers.AutoConfig.from_pretrained(folders["seq_cls"])
        REPORT["auto_config"] = {
            "class": f"{type(config).__module__}.{type(config).__name__}",
            "is_mega_lra": isinstance(config, mega_lra.MegaConfig),
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "num_labels": config.num_labels,
        }

    auto = {
        "model": "AutoModel",
        "masked_lm": "AutoModelForMaskedLM",
        "causal_lm": "AutoModelForCausalLM",
        "seq_cls": "AutoModelForSequenceClassification",
        "multiple_choice": "AutoModelForMultipleChoice",
        "token_cls": "AutoModelForTokenClassification",
        "qa": "AutoModelForQuestionAnswering",
    }
    REPORT["auto_models"] = {}
    for name, auto_name in auto.items():

        @step(f"auto_model.{name}")
        def _auto_model(name=name, auto_name=auto_name):
            model = getattr(transformers, auto_name).from_pretrained(folders[name])
            base = type(model).__mro__[1] if name == "causal_lm" else type(model)
            REPORT["auto_models"][name] = {
                "class": f"{type(model).__module__}.{type(model).__name__}",
                "mega_lra_class": base.__name__,
                "is_mega_lra": isinstance(model, getattr(mega_lra, base.__name__)),
                "training": model.training,
            }
            ids = inputs["mc_input_ids"] if name == "multiple_choice" else inputs["input_ids"]
            mask = None if name == "multiple_choice" else inputs["attention_mask"]
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=mask)
            key = {"model": "last_hidden_state", "qa": "start_logits"}.get(name, "logits")
            TENSORS[f"auto.{name}"] = out[key].contiguous()

    @step("auto_dtype")
    def _auto_dtype():
        half = transformers.AutoModel.from_pretrained(folders["model"], dtype=torch.float16)
        half.save_pretrained(work / "half_saved")
        saved = json.loads((work / "half_saved" / "config.json").read_text())
        auto = transformers.AutoModel.from_pretrained(work / "half_saved", dtype="auto")
        legacy = transformers.AutoModel.from_pretrained(work / "half_saved", torch_dtype="auto")
        default = transformers.AutoModel.from_pretrained(work / "half_saved")
        REPORT["auto_dtype"] = {
            "float16": str(half.dtype),
            "saved_torch_dtype": saved.get("torch_dtype"),
            "auto": str(auto.dtype),
            "legacy_auto": str(legacy.dtype),
            "default": str(default.dtype),
        }

    # ------------------------------------------------------------------ pipelines
    REPORT["pipelines"] = {}

    @step("pipeline.fill-mask")
    def _fill_mask():
        pipe = transformers.pipeline("fill-mask", model=str(folders["masked_lm"]), top_k=3)
        text = "the capital of france is <mask>"
        REPORT["pipelines"]["fill-mask"] = {
            "class": type(pipe.model).__name__,
            "input_ids": pipe.tokenizer(text)["input_ids"],
            "result": [{"token": r["token"], "score": float(r["score"])} for r in pipe(text)],
        }

    @step("pipeline.text-classification")
    def _text_classification():
        pipe = transformers.pipeline("text-classification", model=str(folders["seq_cls"]))
        text = "hello my dog is cute"
        result = pipe(text)[0]
        REPORT["pipelines"]["text-classification"] = {
            "class": type(pipe.model).__name__,
            "input_ids": pipe.tokenizer(text)["input_ids"],
            "label": result["label"],
            "score": float(result["score"]),
        }

    @step("pipeline.token-classification")
    def _token_classification():
        pipe = transformers.pipeline("token-classification", model=str(folders["token_cls"]))
        text = "hello my dog is cute"
        REPORT["pipelines"]["token-classification"] = {
            "class": type(pipe.model).__name__,
            "input_ids": pipe.tokenizer(text)["input_ids"],
            "result": [
                {"index": int(r["index"]), "entity": r["entity"], "score": float(r["score"])}
                for r in pipe(text)
            ],
        }

    @step("pipeline.feature-extraction")
    def _feature_extraction():
        pipe = transformers.pipeline("feature-extraction", model=str(folders["model"]))
        text = "hello my dog is cute"
        REPORT["pipelines"]["feature-extraction"] = {
            "class": type(pipe.model).__name__,
            "input_ids": pipe.tokenizer(text)["input_ids"],
        }
        TENSORS["pipeline.features"] = torch.tensor(pipe(text)[0])

    @step("pipeline.text-generation")
    def _text_generation():
        pipe = transformers.pipeline("text-generation", model=str(folders["causal_lm"]))
        text = "hello my dog"
        # v5's pipeline samples (temperature 0.7) unless told otherwise: ask for greedy decoding
        result = pipe(text, max_new_tokens=5, do_sample=False, return_tensors=True)[0]
        REPORT["pipelines"]["text-generation"] = {
            "class": type(pipe.model).__name__,
            "input_ids": pipe.tokenizer(text)["input_ids"],
            "generated_token_ids": [int(t) for t in result["generated_token_ids"]],
        }

    # -------------------------------------------- HF's Mega doc examples, imports changed
    REPORT["examples"] = {}

    @step("example.causal_lm_from_encoder")
    def _causal_from_encoder():
        from transformers import AutoConfig, AutoTokenizer

        from mega_lra import MegaForCausalLM

        checkpoint = str(folders["masked_lm"])
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        config = AutoConfig.from_pretrained(checkpoint)
        config.is_decoder = True
        config.bidirectional = False
        model = MegaForCausalLM.from_pretrained(
            checkpoint, config=config, ignore_mismatched_sizes=True
        )
        inputs_ = tokenizer("hello my dog is cute", return_tensors="pt")
        outputs = model(**inputs_)
        REPORT["examples"]["causal_lm_from_encoder"] = {
            "config_class": type(config).__name__,
            "input_ids": inputs_["input_ids"].tolist(),
            "logits_shape": list(outputs.logits.shape),
            "is_decoder": model.config.is_decoder,
            "bidirectional": model.config.bidirectional,
        }

    @step("example.masked_lm")
    def _masked_lm():
        from transformers import AutoTokenizer

        from mega_lra import MegaForMaskedLM

        checkpoint = str(folders["masked_lm"])
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = MegaForMaskedLM.from_pretrained(checkpoint)
        inputs_ = tokenizer("the capital of france is <mask>", return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs_).logits
        mask_token_index = (inputs_.input_ids == tokenizer.mask_token_id)[0].nonzero(as_tuple=True)[
            0
        ]
        predicted_token_id = logits[0, mask_token_index].argmax(axis=-1)
        labels = tokenizer("the capital of france is paris", return_tensors="pt")["input_ids"]
        labels = torch.where(inputs_.input_ids == tokenizer.mask_token_id, labels, -100)
        outputs = model(**inputs_, labels=labels)
        REPORT["examples"]["masked_lm"] = {
            "input_ids": inputs_["input_ids"].tolist(),
            "labels": labels.tolist(),
            "predicted": tokenizer.decode(predicted_token_id),
            "predicted_id": int(predicted_token_id[0]),
            "loss": float(outputs.loss),
        }

    # -------------------------------------------------------------------- Trainer
    @step("trainer.sequence_classification")
    def _trainer():
        from transformers import (
            AutoModelForSequenceClassification,
            Trainer,
            TrainingArguments,
        )

        model = AutoModelForSequenceClassification.from_pretrained(folders["seq_cls"])
        ids, labels = inputs["train_input_ids"], inputs["train_labels"]
        rows = [{"input_ids": ids[i], "labels": int(labels[i])} for i in range(len(ids))]
        args = TrainingArguments(
            output_dir=str(work / "trainer"),
            per_device_train_batch_size=4,
            per_device_eval_batch_size=8,
            max_steps=6,
            learning_rate=5e-3,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = trainer.train()
        metrics = trainer.evaluate()
        changed = sorted(k for k, v in model.state_dict().items() if not torch.equal(v, before[k]))
        trainer.model.save_pretrained(work / "trained")
        REPORT["trainer"] = {
            "train_loss": float(result.training_loss),
            "eval_loss": float(metrics["eval_loss"]),
            "changed_parameters": len(changed),
            "parameters": len(before),
        }

    save_file({k: v.contiguous() for k, v in TENSORS.items()}, str(work / "v5_outputs.safetensors"))
    (work / "report.json").write_text(json.dumps(REPORT, indent=2, sort_keys=True))
    print(json.dumps({"errors": sorted(REPORT["errors"]), **REPORT["versions"]}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
