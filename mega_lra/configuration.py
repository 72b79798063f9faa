"""`MegaConfig`: the single source of truth for every Mega model in mega-lra.

It carries every field of Hugging Face's `MegaConfig` (transformers 4.28-4.57, `model_type="mega"`)
with the same name and default, the inherited `PretrainedConfig` fields that Mega uses, and a few
mega-lra fields (marked below) that select behaviour HF does not have. Unknown keys from a
`config.json` are kept as attributes and written back, so a round trip loses nothing.

Paper symbols: d = `hidden_size`, v = `intermediate_size`, z = `shared_representation_size`,
h = `ema_projection_size`, c = `chunk_size` (when `use_chunking`), d_FFN = `nffn_hidden_size`.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("silu", "relu", "linear", "gelu", "gelu_accurate", "tanh", "swish")
ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
NORMALIZATION_TYPES = ("layernorm", "scalenorm", "rmsnorm", "batchnorm", "syncbatchnorm")
RELATIVE_BIASES = ("simple", "rotary")
RELATIVE_BIAS_LAYOUTS = ("hf", "original")


class ConfigError(ValueError):
    """A configuration value that cannot work, named with what was expected."""


# HF's MegaConfig fields and defaults (hf_mega.md §2), in HF's order.
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "intermediate_size": 256,
    "ema_projection_size": 16,
    "bidirectional": True,
    "shared_representation_size": 64,
    "use_chunking": False,
    "chunk_size": -1,
    "truncation": None,
    "normalize_before_mega": True,
    "normalization_type": "scalenorm",
    "norm_affine": True,
    "activation": "silu",
    "attention_activation": "softmax",
    "dropout_prob": 0.1,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "use_feature_dropout": False,
    "use_normalized_ffn": True,
    "nffn_hidden_size": 256,
    "normalize_before_ffn": True,
    "nffn_activation_dropout_prob": 0.1,
    "max_positions": 2048,
    "add_token_type_embeddings": False,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "ema_delta_alpha_range": 0.2,
    "ema_beta_range": 0.02,
    "ema_gamma_omega_range": 1.0,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "relative_positional_bias": "rotary",
    "classifier_dropout": None,
    "use_cache": True,
    "add_lm_hidden_dense_layer": True,
    # inherited PretrainedConfig fields that Mega's models read
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "num_labels": 2,
    "problem_type": None,
    "output_hidden_states": False,
    "use_return_dict": True,
}

# mega-lra fields (not in HF); defaults reproduce HF's behaviour where HF is correct.
_EXTRA_DEFAULTS: dict[str, Any] = {
    # "hf": simple-bias table of 2*max_positions-1 indexed around chunk_size-1 when chunk_size >= 0
    # (HF's layout, so HF checkpoints load); "original": the fairseq layout, a 2C-1 table when
    # chunking and a 2*max_positions-1 table otherwise, indexed around its centre.
    "relative_bias_layout": "hf",
    # BatchNorm statistics exclude padded positions (the original includes them).
    "norm_exclude_padding": False,
    # Reproduce HF's MegaRMSNorm, which multiplies by the weight without normalising (HF bug).
    "rmsnorm_hf_compat": False,
    # A norm after the last block (the original LRA encoder uses one with pre-norm; HF has none).
    "final_norm": False,
    # Epsilon of every norm (1e-5 in the original and in HF).
    "norm_eps": 1e-5,
    # Attention spans (the whole sequence, or a chunk) longer than this run in query blocks of
    # this size, each recomputed in the backward (activation checkpointing): memory O(L * block)
    # instead of O(L^2) per layer, same values. null: never block.
    "attention_block_size": 2048,
    # Kernel of softmax attention (layers/attention_backends.py): "reference" (blocked plain torch
    # ops; the CPU path), "sdpa" (scaled_dot_product_attention, memory-efficient kernel on CUDA),
    # "flex" (FlexAttention under torch.compile; CUDA for training), "auto" (the fast one on
    # CUDA, "reference" elsewhere). laplace / relu2 always run the blocked kernel.
    "attention_backend": "auto",
}

_FIELDS = {**_HF_DEFAULTS, **_EXTRA_DEFAULTS}
_PRETRAINED_ONLY = ("use_return_dict",)


@dataclass(init=False)
class MegaConfig:
    """Configuration of a Mega model; `MegaConfig(**hf_config_json)` accepts HF's fields."""

    model_type = "mega"

    def __init__(self, **kwargs: Any) -> None:
        for name, default in _FIELDS.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        if "return_dict" in kwargs:
            self.use_return_dict = bool(kwargs.pop("return_dict"))
        if "id2label" in kwargs and kwargs["id2label"] is not None:
            self.id2label = {int(k): v for k, v in kwargs.pop("id2label").items()}
            self.num_labels = len(self.id2label)
        else:
            kwargs.pop("id2label", None)
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if "label2id" in kwargs and kwargs["label2id"] is not None:
            self.label2id = dict(kwargs.pop("label2id"))
        else:
            kwargs.pop("label2id", None)
            self.label2id = {v: k for k, v in self.id2label.items()}
        kwargs.pop("model_type", None)
        self._extra_keys = sorted(kwargs)
        for name, value in kwargs.items():  # other PretrainedConfig fields round-trip untouched
            setattr(self, name, value)
        self.num_attention_heads = 1  # HF fixes this; Mega is single-head
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def effective_chunk_size(self) -> int:
        """The attention chunk C, or -1 for full attention."""
        return self.chunk_size if self.use_chunking and self.chunk_size > 0 else -1

    @property
    def relative_bias_max_positions(self) -> int:
        """M in the simple bias's table of 2M-1 entries."""
        if self.relative_bias_layout == "original" and self.effective_chunk_size > 0:
            return self.effective_chunk_size
        return self.max_positions

    @property
    def relative_bias_center(self) -> int:
        """Table index of offset 0 (HF centres it on chunk_size-1 when chunk_size >= 0)."""
        if self.relative_bias_layout == "hf" and self.chunk_size >= 0:
            return self.chunk_size - 1
        return self.relative_bias_max_positions - 1

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"MegaConfig.{name}={value!r}: expected one of {list(allowed)}")

        choice("activation", ACTIVATIONS)
        choice("attention_activation", ATTENTION_ACTIVATIONS)
        choice("normalization_type", NORMALIZATION_TYPES)
        choice("relative_positional_bias", RELATIVE_BIASES)
        choice("relative_bias_layout", RELATIVE_BIAS_LAYOUTS)
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "intermediate_size",
            "ema_projection_size",
            "shared_representation_size",
            "max_positions",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"MegaConfig.{name}={value!r}: expected a positive integer")
        if self.use_normalized_ffn and (
            not isinstance(self.nffn_hidden_size, int) or self.nffn_hidden_size <= 0
        ):
            raise ConfigError(
                f"MegaConfig.nffn_hidden_size={self.nffn_hidden_size!r}: expected a positive "
                "integer when use_normalized_ffn is true"
            )
        if not isinstance(self.chunk_size, int) or self.chunk_size == 0 or self.chunk_size < -1:
            raise ConfigError(
                f"MegaConfig.chunk_size={self.chunk_size!r}: expected -1 (no chunking) or a "
                "positive integer"
            )
        if self.use_chunking and self.chunk_size <= 0:
            raise ConfigError(
                f"MegaConfig.use_chunking=True needs chunk_size > 0, got {self.chunk_size}"
            )
        if self.truncation is not None and (
            not isinstance(self.truncation, int) or self.truncation <= 0
        ):
            raise ConfigError(
                f"MegaConfig.truncation={self.truncation!r}: expected null or a positive integer"
            )
        if self.attention_block_size is not None and (
            not isinstance(self.attention_block_size, int) or self.attention_block_size <= 0
        ):
            raise ConfigError(
                f"MegaConfig.attention_block_size={self.attention_block_size!r}: expected null "
                "or a positive integer"
            )
        choice("attention_backend", ("auto", "reference", "sdpa", "flex"))
        if self.attention_backend in ("sdpa", "flex") and self.attention_activation != "softmax":
            raise ConfigError(
                f"MegaConfig.attention_backend={self.attention_backend!r} runs softmax attention "
                f"only; attention_activation={self.attention_activation!r} needs 'auto' or "
                "'reference'"
            )
        if self.attention_backend == "flex" and float(self.attention_probs_dropout_prob) > 0:
            raise ConfigError(
                "MegaConfig.attention_backend='flex' has no attention dropout; set "
                "attention_probs_dropout_prob=0 or use 'sdpa'"
            )
        if self.relative_positional_bias == "rotary" and self.shared_representation_size % 2:
            raise ConfigError(
                "MegaConfig.shared_representation_size="
                f"{self.shared_representation_size}: the rotary bias needs an even size"
            )
        if (
            self.relative_positional_bias == "simple"
            and self.relative_bias_layout == "hf"
            and self.chunk_size > 2 * self.max_positions - 1
        ):
            raise ConfigError(
                f"MegaConfig.chunk_size={self.chunk_size} exceeds the simple bias table "
                f"(2*max_positions-1 = {2 * self.max_positions - 1})"
            )
        for name in (
            "dropout_prob",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "nffn_activation_dropout_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"MegaConfig.{name}={value!r}: expected a probability in [0, 1)")
        if self.is_decoder and self.bidirectional:
            warnings.warn(
                "MegaConfig: is_decoder=True with bidirectional=True: the EMA sees future "
                "tokens, so the model is not causal and cannot decode with a state",
                stacklevel=3,
            )

    # ---------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_type": self.model_type}
        for name in _FIELDS:
            if name in _PRETRAINED_ONLY:
                continue
            out[name] = copy.deepcopy(getattr(self, name))
        out["return_dict"] = self.use_return_dict
        out["num_attention_heads"] = 1
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = dict(self.label2id)
        for name in self._extra_keys:
            out[name] = copy.deepcopy(getattr(self, name))
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> MegaConfig:
        data = dict(data)
        model_type = data.get("model_type", "mega")
        if model_type != "mega":
            raise ConfigError(f"config model_type={model_type!r}: expected 'mega'")
        if "num_labels" in overrides and "id2label" not in overrides:
            data.pop("id2label", None)  # as HF: a new label count replaces the old label names
            data.pop("label2id", None)
        data.update(overrides)
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> MegaConfig:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data, **overrides)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MegaConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"MegaConfig({self.to_json_string()})"
