"""Register mega-lra's Mega with transformers >= 5's Auto classes (optional; imports transformers).

transformers v5 deleted Mega, so `AutoConfig.from_pretrained(folder)` on a Mega checkpoint fails
there with "does not recognize this architecture". Importing this module (or calling
`register()`) maps `model_type="mega"` back:

    import mega_lra.hf_auto  # noqa: F401  (registers on import)
    from transformers import AutoConfig, AutoModelForMaskedLM, pipeline

    config = AutoConfig.from_pretrained(folder)              # a mega_lra.MegaConfig
    model = AutoModelForMaskedLM.from_pretrained(folder)     # a mega_lra.MegaForMaskedLM
    fill = pipeline("fill-mask", model=folder)

The classes registered are mega-lra's own (not subclasses of transformers' `PreTrainedModel`;
the registration API does not need that), except `AutoModelForCausalLM`, which gets
`MegaForCausalLM` below: mega-lra's class plus a transformers `GenerationConfig` and a `generate`
that reads it, so the text-generation pipeline works. `AutoTokenizer` maps Mega configs to the
RoBERTa tokenizer, as transformers 4.x did. What works with pipelines and `Trainer`, and what does
not, is in docs/hf_compat.md.

`import mega_lra` never imports this module: the core library does not depend on transformers.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    GenerationConfig,
)

import mega_lra
from mega_lra.hf.configuration import MegaConfig
from mega_lra.hf.generation import generate as _generate

if Version(transformers.__version__).major < 5:
    raise ImportError(
        f"mega_lra.hf_auto is for transformers >= 5 (found {transformers.__version__}); "
        "transformers 4.28-4.57 ship their own Mega (transformers.MegaModel)"
    )

__all__ = ["AUTO_CLASSES", "MegaForCausalLM", "register"]

# Settings of a GenerationConfig that the small decoding loop of mega_lra.hf.generation handles;
# any other setting that differs from GenerationConfig's default is refused, not ignored.
_SUPPORTED = {
    "max_length",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "num_return_sequences",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}


class MegaForCausalLM(mega_lra.MegaForCausalLM):
    """mega-lra's `MegaForCausalLM` with a transformers `GenerationConfig` (`generation_config`)
    and a `generate` that takes one or HF's generation keywords, for `pipeline("text-generation")`
    and code that calls `model.generate(**inputs, max_new_tokens=...)`. Greedy and sampled
    decoding only (top-k, top-p, temperature); beam search and logits processors are refused."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )

    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """HF-style `generate`: the settings of `generation_config` (default: the model's),
        overridden by keywords (`max_new_tokens`, `max_length`, `do_sample`, `temperature`,
        `top_k`, `top_p`, `eos_token_id`, `pad_token_id`, `num_return_sequences`); `generator`
        seeds sampling. Returns the token ids (B * num_return_sequences, L + new)."""
        if input_ids is None:
            raise ValueError("MegaForCausalLM.generate needs input_ids (a prompt of >= 1 token)")
        generator = kwargs.pop("generator", None)
        settings = (generation_config or self.generation_config).to_dict()
        defaults = GenerationConfig().to_dict()
        for key, value in kwargs.items():
            if key not in defaults:
                raise ValueError(f"MegaForCausalLM.generate: unknown argument {key!r}")
            settings[key] = value
        unsupported = sorted(
            k
            for k, v in settings.items()
            if k not in _SUPPORTED and k in defaults and v != defaults[k]
        )
        if unsupported:
            raise ValueError(
                "MegaForCausalLM.generate supports greedy and sampled decoding (max_new_tokens, "
                "max_length, do_sample, temperature, top_k, top_p, eos/pad token ids, "
                f"num_return_sequences); these settings are not supported: {unsupported}"
            )
        if settings.get("return_dict_in_generate"):
            raise ValueError("MegaForCausalLM.generate returns token ids only")
        copies = int(settings.get("num_return_sequences") or 1)
        if copies > 1:
            input_ids = input_ids.repeat_interleave(copies, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(copies, dim=0)
        new_tokens = settings.get("max_new_tokens")
        if new_tokens is None:
            new_tokens = max(0, int(settings.get("max_length") or 20) - input_ids.size(1))
        eos = settings.get("eos_token_id")
        if isinstance(eos, (list, tuple)):
            if len(eos) > 1:
                raise ValueError(f"MegaForCausalLM.generate: one eos_token_id, got {eos}")
            eos = eos[0] if eos else None
        return _generate(
            self,
            input_ids,
            attention_mask=attention_mask,
            max_new_tokens=int(new_tokens),
            do_sample=bool(settings.get("do_sample")),
            temperature=float(settings.get("temperature") or 1.0),
            top_k=settings.get("top_k"),
            top_p=settings.get("top_p"),
            eos_token_id=eos,
            pad_token_id=settings.get("pad_token_id"),
            generator=generator,
        )


AUTO_CLASSES = {
    AutoModel: mega_lra.MegaModel,
    AutoModelForCausalLM: MegaForCausalLM,
    AutoModelForMaskedLM: mega_lra.MegaForMaskedLM,
    AutoModelForSequenceClassification: mega_lra.MegaForSequenceClassification,
    AutoModelForMultipleChoice: mega_lra.MegaForMultipleChoice,
    AutoModelForTokenClassification: mega_lra.MegaForTokenClassification,
    AutoModelForQuestionAnswering: mega_lra.MegaForQuestionAnswering,
}


def register() -> None:
    """Map `model_type="mega"` to mega-lra in transformers' Auto classes (idempotent)."""
    AutoConfig.register("mega", MegaConfig, exist_ok=True)
    for auto_class, model_class in AUTO_CLASSES.items():
        auto_class.register(MegaConfig, model_class, exist_ok=True)
    # transformers 4.x paired Mega with the RoBERTa tokenizer (mnaylor/mega-base-wikitext uses it)
    params = inspect.signature(AutoTokenizer.register).parameters
    if "tokenizer_class" in params:
        AutoTokenizer.register(
            MegaConfig, tokenizer_class=transformers.RobertaTokenizer, exist_ok=True
        )
    else:  # pragma: no cover - early v5 releases
        AutoTokenizer.register(
            MegaConfig, fast_tokenizer_class=transformers.RobertaTokenizerFast, exist_ok=True
        )


register()
