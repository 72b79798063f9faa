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
from pathlib import Path
from typing import Any

from mega_lra.atomic_files import write_text

ACTIVATIONS = ("silu", "relu", "linear", "gelu", "gelu_accurate", "tanh", "swish")
ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
NORMALIZATION_TYPES = ("layernorm", "scalenorm", "rmsnorm", "batchnorm", "syncbatchnorm")
RELATIVE_BIASES = ("simple", "rotary")
RELATIVE_BIAS_LAYOUTS = ("hf", "original")
EMA_KERNELS = ("ema", "s4d")


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
    # The EMA sub-layer's kernel: "ema" (the multi-dimensional damped EMA, eqs. 2-3) or "s4d"
    # (an S4D kernel in its place, the S4 repository's Mega ablation; layers/ssm_kernels.py
    # `S4DGate`: d_state = ema_projection_size, which must then be even). mega-lra only:
    # transformers' Mega cannot load the weights of an "s4d" model.
    "ema_kernel": "ema",
}

_FIELDS = {**_HF_DEFAULTS, **_EXTRA_DEFAULTS}
_PRETRAINED_ONLY = ("use_return_dict",)


# PretrainedConfig fields beyond those above that HF code reads from any config, with
# PretrainedConfig's defaults: attribute access works, and config.json leaves them out while they
# keep these values (as transformers' `use_diff` does).
_PRETRAINED_DEFAULTS: dict[str, Any] = {
    "output_attentions": False,
    "torchscript": False,
    "torch_dtype": None,
    "architectures": None,
    "finetuning_task": None,
    "tokenizer_class": None,
    "prefix": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "task_specific_params": None,
    "is_encoder_decoder": False,
    "cross_attention_hidden_size": None,
    "tie_encoder_decoder": False,
    "chunk_size_feed_forward": 0,
    "pruned_heads": {},
}
# Inherited fields written to config.json only when they differ from these (PretrainedConfig's)
# defaults; every Mega field is always written, as transformers does.
_INHERITED_DEFAULTS: dict[str, Any] = {
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "problem_type": None,
    "output_hidden_states": False,
    "return_dict": True,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    **_PRETRAINED_DEFAULTS,
}
# Keyword arguments of transformers' loaders that are not config fields: accepted, never stored.
_LOADER_KWARGS = frozenset(
    {
        "_from_auto",
        "_from_pipeline",
        "_commit_hash",
        "name_or_path",
        "trust_remote_code",
        "code_revision",
        "adapter_kwargs",
    }
)
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


@dataclass(init=False)
class MegaConfig:
    """Configuration of a Mega model; `MegaConfig(**hf_config_json)` accepts HF's fields.

    It behaves like transformers' `PretrainedConfig` where HF code touches one: `from_pretrained`,
    `save_pretrained`, `to_dict` / `from_dict`, `to_json_file` / `to_json_string`, `update`,
    attribute access for every field, and `num_labels` derived from `id2label` (setting it to a
    new count replaces the label names with `LABEL_i`). Setting an attribute does not validate;
    models validate their config when built, and `update` validates at once."""

    model_type = "mega"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("model_type", None)
        for name in _LOADER_KWARGS:
            kwargs.pop(name, None)
        self._name_or_path = str(kwargs.pop("_name_or_path", ""))
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        for name, default in _FIELDS.items():
            if name != "num_labels":  # derived from id2label, below
                setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        if "return_dict" in kwargs:
            self.return_dict = bool(kwargs.pop("return_dict"))
        for name, default in _PRETRAINED_DEFAULTS.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        if id2label is not None:
            if not isinstance(id2label, dict):
                raise ConfigError(f"MegaConfig.id2label={id2label!r}: expected a dict")
            self.id2label = {int(k): v for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                warnings.warn(
                    f"MegaConfig: num_labels={num_labels} but id2label has {len(self.id2label)} "
                    "entries; id2label wins (as in transformers)",
                    stacklevel=2,
                )
        else:
            count = 2 if num_labels is None else num_labels
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}
        if label2id is not None and not isinstance(label2id, dict):
            raise ConfigError(f"MegaConfig.label2id={label2id!r}: expected a dict")
        self.label2id = (
            dict(label2id) if label2id is not None else {v: k for k, v in self.id2label.items()}
        )
        for name, value in kwargs.items():  # other PretrainedConfig fields round-trip untouched
            setattr(self, name, value)
        self.num_attention_heads = 1  # HF fixes this; Mega is single-head
        self.validate()

    # ------------------------------------------------------- PretrainedConfig properties
    @property
    def num_labels(self) -> int:
        """`len(id2label)`; setting a different count resets the labels to `LABEL_i` (as HF)."""
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"MegaConfig.num_labels={value!r}: expected a non-negative integer")
        if getattr(self, "id2label", None) is None or len(self.id2label) != value:
            self.id2label = {i: f"LABEL_{i}" for i in range(value)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        """Whether models return output objects (`return_dict and not torchscript`, as HF)."""
        return bool(self.return_dict) and not getattr(self, "torchscript", False)

    @use_return_dict.setter
    def use_return_dict(self, value: bool) -> None:
        self.return_dict = bool(value)

    @property
    def name_or_path(self) -> str:
        """The folder (or hub id) the config was loaded from; never written to config.json."""
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self._name_or_path = str(value)

    @property
    def sub_configs(self) -> dict[str, Any]:
        """No nested configs (transformers' Auto classes ask)."""
        return {}

    def get_text_config(self, *args: Any, **kwargs: Any) -> MegaConfig:
        """Mega is text-only: the config itself (transformers' pipelines and Auto classes ask)."""
        return self

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
            "shared_representation_size",
            "max_positions",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"MegaConfig.{name}={value!r}: expected a positive integer")
        h = self.ema_projection_size
        if not isinstance(h, int) or isinstance(h, bool) or h < 0:
            raise ConfigError(
                f"MegaConfig.ema_projection_size={h!r}: expected an integer >= 0 (0 removes the "
                "EMA, the ablation of the paper's Figure 4)"
            )
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
        choice("ema_kernel", EMA_KERNELS)
        if self.ema_kernel == "s4d" and h % 2:
            raise ConfigError(
                f"MegaConfig.ema_projection_size={h}: ema_kernel='s4d' needs an even size (the "
                "S4D state holds h/2 complex modes)"
            )
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
        """Every field (HF's, the inherited ones, mega-lra's, and any other key it was given)."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for name in _FIELDS:
            if name in _PRETRAINED_ONLY or name == "num_labels":  # derived, not stored (as HF)
                continue
            out[name] = copy.deepcopy(getattr(self, name))
        out["return_dict"] = bool(self.return_dict)
        out["num_attention_heads"] = 1
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = dict(self.label2id)
        for name in _PRETRAINED_DEFAULTS:
            out[name] = copy.deepcopy(getattr(self, name))
        for name, value in vars(self).items():  # keys from config.json or set by the user
            if not name.startswith("_") and name not in out:
                out[name] = copy.deepcopy(value)
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """`to_dict` less the inherited PretrainedConfig fields that keep their defaults: what
        transformers writes to config.json. Every Mega and mega-lra field stays."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if not (k in _INHERITED_DEFAULTS and v == _INHERITED_DEFAULTS[k])
        }

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(
        self, json_file_path: str | os.PathLike, use_diff: bool = True, overwrite: bool = False
    ) -> Path:
        """Write the config as JSON (only the non-default inherited fields when `use_diff`).

        An existing file with other content is not replaced unless `overwrite=True`."""
        return _write_text_safely(Path(json_file_path), self.to_json_string(use_diff), overwrite)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        push_to_hub: bool = False,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Write `config.json` into `save_directory` (created if needed), as transformers does.

        An existing config.json with other content is not replaced unless `overwrite=True`."""
        if push_to_hub:
            raise NotImplementedError(
                "MegaConfig.save_pretrained(push_to_hub=True): mega-lra does not upload; save "
                "locally and upload the folder with huggingface_hub"
            )
        if kwargs:
            raise TypeError(f"MegaConfig.save_pretrained: unexpected arguments {sorted(kwargs)}")
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder}: expected a folder for config.json, found a file")
        folder.mkdir(parents=True, exist_ok=True)
        self.to_json_file(folder / "config.json", use_diff=True, overwrite=overwrite)
        return folder

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set each key of `config_dict` as an attribute (as HF), then validate the result."""
        for name, value in config_dict.items():
            setattr(self, name, value)
        self.validate()

    @classmethod
    def from_dict(
        cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs: Any
    ) -> MegaConfig | tuple[MegaConfig, dict[str, Any]]:
        """Build from a config.json dict, then apply `kwargs` as transformers does: a key that is
        an attribute of the config overrides it; with `return_unused_kwargs=True` the others are
        returned beside the config (for a model's `__init__`), otherwise they are kept as
        attributes."""
        data = dict(config_dict)
        model_type = data.get("model_type", "mega")
        if model_type != "mega":
            raise ConfigError(f"config model_type={model_type!r}: expected 'mega'")
        for name in _LOADER_KWARGS:
            kwargs.pop(name, None)
        labels, names = kwargs.get("num_labels"), kwargs.get("id2label")
        if labels is not None and names is not None and len(names) != labels:
            raise ConfigError(
                f"num_labels={kwargs['num_labels']} but id2label has "
                f"{len(kwargs['id2label'])} entries: pass matching values"
            )
        config = cls(**data)
        unused: dict[str, Any] = {}
        for name, value in kwargs.items():
            if hasattr(config, name) or not return_unused_kwargs:
                if name == "id2label" and value is not None:
                    value = {int(k): v for k, v in value.items()}
                if name == "torch_dtype" and value is not None and not isinstance(value, str):
                    value = str(value).replace("torch.", "")
                setattr(config, name, value)
            else:
                unused[name] = value
        if "id2label" in kwargs and "label2id" not in kwargs:
            config.label2id = {v: k for k, v in config.id2label.items()}
        config.validate()
        return (config, unused) if return_unused_kwargs else config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> MegaConfig:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ) -> MegaConfig | tuple[MegaConfig, dict[str, Any]]:
        """Read `config.json` from a checkpoint folder, a JSON file, or a hub id (downloaded
        when online). `kwargs` override fields as in `from_dict`; transformers' hub arguments
        (`cache_dir`, `revision`, `token`, `local_files_only`, `force_download`, `subfolder`) are
        honoured for downloads."""
        from mega_lra.hf import state_dict as io  # imports torch; only needed here

        hub = {name: kwargs.pop(name) for name in HUB_KWARGS if name in kwargs}
        path = Path(pretrained_model_name_or_path)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: not valid JSON ({err})") from err
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a JSON object")
            source = path
        else:
            folder = io.resolve_folder(pretrained_model_name_or_path, **hub)
            data = io.read_config_dict(folder)
            source = folder / io.CONFIG_NAME
        try:
            result = cls.from_dict(data, return_unused_kwargs=return_unused_kwargs, **kwargs)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err
        config = result[0] if return_unused_kwargs else result
        config.name_or_path = str(pretrained_model_name_or_path)
        return result

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MegaConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"MegaConfig({self.to_json_string(use_diff=False)})"


def _write_text_safely(path: Path, text: str, overwrite: bool) -> Path:
    """Write `text` to `path` atomically. An existing file is left alone when it already holds
    exactly `text`, and refused (FileExistsError) when it holds anything else, unless overwrite."""
    if path.exists():
        if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text:
            return path
        if not overwrite:
            raise FileExistsError(
                f"{path} already exists with other content; pass overwrite=True to replace it"
            )
    write_text(path, text)
    return path
