"""The Hugging Face Mega model family, weight-compatible with transformers 4.28-4.57's Mega.

`MegaModel` (embeddings -> Mega blocks -> optional pooler) and six heads with HF's module names,
so `state_dict()` keys equal HF's, forward arguments and output attribute names follow HF, and
`from_pretrained` / `save_pretrained` read and write HF checkpoint folders.

Where HF's Mega is wrong, mega-lra is correct (see docs/hf_compat.md): RMSNorm normalises (set
`rmsnorm_hf_compat=True` to reproduce HF's outputs for HF rmsnorm checkpoints); the decoding
state is exact for laplace/relu2, chunking and truncation; left-padded decoders give no NaN;
there is no stale eval-mode EMA cache; chunking works for any length.

`past_key_values` is a list with one `mega_lra.layers.AttentionState` per layer (not HF's
3-tuples): the EMA state (and, with truncation, the input window) plus the keys/values of each
row's current chunk. Reorder it for beam search with `state.index_select(rows)`.
Cross-attention (`add_cross_attention`) is not supported; such configs are refused.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra import checkpoint_io as io
from mega_lra.configuration import HUB_KWARGS, ConfigError, MegaConfig
from mega_lra.layers.block import MegaBlock, run_blocks
from mega_lra.layers.gated_attention import AttentionState
from mega_lra.layers.norms import SequenceNorm
from mega_lra.outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

HF_TRANSFORMERS_VERSION = "4.41.2"  # written into config.json for transformers' loader


class MegaPreTrainedModel(nn.Module):
    """Shared loading, saving, initialisation and embedding handling for the Mega family.

    The surface of transformers' `PreTrainedModel` that code written for HF's Mega touches:
    `from_pretrained` (with `config=`, `torch_dtype`/`dtype`, `ignore_mismatched_sizes`, `strict`,
    `output_loading_info`, `device_map`), `save_pretrained` (safetensors or `.bin`, sharding),
    `resize_token_embeddings`, `get_/set_input_embeddings`, `get_/set_output_embeddings`,
    `tie_weights`, `num_parameters`, `gradient_checkpointing_enable/disable`, `can_generate`."""

    config_class = MegaConfig
    base_model_prefix = "mega"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _tied_head: str | None = None  # attribute holding the LM head tied to the word embeddings

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        if not isinstance(config, MegaConfig):
            raise TypeError(f"expected a MegaConfig, got {type(config).__name__}")
        if config.add_cross_attention:
            raise ConfigError(
                "MegaConfig.add_cross_attention=True: cross-attention is out of scope for "
                "mega-lra; this checkpoint/config cannot be used"
            )
        with warnings.catch_warnings():  # the config warned when built; re-check its values only
            warnings.simplefilter("ignore")
            config.validate()  # attributes may have been set since the config was built
        self.config = config

    # ------------------------------------------------------------------ init
    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    # ------------------------------------------------------------ embeddings
    @property
    def base_model(self) -> MegaModel:
        """The `MegaModel` inside a head (the model itself for `MegaModel`)."""
        return getattr(self, self.base_model_prefix, self)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embedding_layer.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if not isinstance(value, nn.Embedding) or value.embedding_dim != self.config.hidden_size:
            raise ValueError(
                f"set_input_embeddings: expected an nn.Embedding of dimension "
                f"{self.config.hidden_size}, got {value!r}"
            )
        self.base_model.embedding_layer.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear | None:
        """The vocabulary projection of the LM heads; None for the other classes (as HF)."""
        return getattr(self, self._tied_head) if self._tied_head else None

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        if not self._tied_head:
            raise AttributeError(f"{type(self).__name__} has no output embeddings (no LM head)")
        setattr(self, self._tied_head, new_embeddings)

    def tie_weights(self) -> None:
        """Share the LM head's weight with the word embeddings when `tie_word_embeddings`; the
        head's bias is padded with zeros (or cut) to the vocabulary, as transformers does."""
        head = self.get_output_embeddings()
        if head is None or not self.config.tie_word_embeddings:
            return
        embeddings = self.get_input_embeddings()
        head.weight = embeddings.weight
        rows = embeddings.num_embeddings
        if head.bias is not None and head.bias.shape[0] != rows:
            with torch.no_grad():
                bias = head.bias.new_zeros(rows)
                keep = min(rows, head.bias.shape[0])
                bias[:keep] = head.bias[:keep]
            head.bias = nn.Parameter(bias, requires_grad=head.bias.requires_grad)
        head.out_features = rows

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Embedding:
        """Resize the vocabulary to `new_num_tokens` (rounded up to `pad_to_multiple_of`), as
        transformers does: the first rows are kept, `config.vocab_size` follows, a tied LM head
        stays tied (its bias gains zeros), an untied head is resized with the embeddings.

        New rows: with `mean_resizing=True` (transformers >= 4.46 and v5) the mean of the old rows
        plus noise of covariance 1e-9 x theirs (untied head bias: the old bias mean plus noise of
        1e-9 x its std); with `mean_resizing=False` (transformers <= 4.45) the model's init,
        N(0, initializer_range) and zero bias. Returns the input embeddings."""
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        rows = old.num_embeddings if new_num_tokens is None else new_num_tokens
        if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
            raise ValueError(f"new_num_tokens={new_num_tokens!r}: expected a positive integer")
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of <= 0:
                raise ValueError(
                    f"pad_to_multiple_of={pad_to_multiple_of!r}: expected a positive integer"
                )
            rows = -(-rows // pad_to_multiple_of) * pad_to_multiple_of
        tied = self.config.tie_word_embeddings and self._tied_head is not None
        self.set_input_embeddings(self._resized_embedding(old, rows, mean_resizing))
        head = self.get_output_embeddings()
        if head is not None and not tied:
            self.set_output_embeddings(self._resized_head(head, rows, mean_resizing))
        self.config.vocab_size = rows
        self.tie_weights()
        return self.get_input_embeddings()

    def _resized_embedding(self, old: nn.Embedding, rows: int, mean: bool) -> nn.Embedding:
        if rows == old.num_embeddings:
            return old
        pad = old.padding_idx if old.padding_idx is not None and old.padding_idx < rows else None
        weight = old.weight
        new = nn.Embedding(rows, old.embedding_dim, padding_idx=pad)
        new.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            if not mean:
                self._init_weights(new)
            keep = min(rows, old.num_embeddings)
            if rows > keep and mean:
                new.weight[keep:] = _mean_rows(weight.detach(), rows - keep)
            new.weight[:keep] = weight[:keep]
        new.weight.requires_grad_(weight.requires_grad)
        return new

    def _resized_head(self, old: nn.Linear, rows: int, mean: bool) -> nn.Linear:
        if rows == old.out_features:
            return old
        weight = old.weight
        new = nn.Linear(old.in_features, rows, bias=old.bias is not None)
        new.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self._init_weights(new)
            keep = min(rows, old.out_features)
            if rows > keep and mean:
                new.weight[keep:] = _mean_rows(weight.detach(), rows - keep)
                if old.bias is not None:
                    bias = old.bias.detach().float()
                    new.bias[keep:] = torch.normal(
                        bias.mean().expand(rows - keep), 1e-9 * bias.std().item()
                    ).to(new.bias.dtype)
            new.weight[:keep] = weight[:keep]
            if old.bias is not None:
                new.bias[:keep] = old.bias[:keep]
        new.requires_grad_(weight.requires_grad)
        return new

    # ---------------------------------------------------------------- misc HF
    @classmethod
    def can_generate(cls) -> bool:
        """True for `MegaForCausalLM` (it has `generate`), False for the other classes."""
        return False

    @property
    def name_or_path(self) -> str:
        return self.config.name_or_path

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, **_: Any
    ) -> None:
        """Recompute each Mega block in the backward pass (HF's Mega refused this)."""
        self.base_model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.base_model.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.base_model, "gradient_checkpointing", False))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (a tied head is not counted twice), as HF."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        seen = {}
        for p in self.parameters():
            if id(p) not in skip and (not only_trainable or p.requires_grad):
                seen[id(p)] = p.numel()
        return sum(seen.values())

    def _encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        output_hidden_states: bool | None,
        output_attentions: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """Run the heads' `MegaModel` (attribute `mega`) and return its output object."""
        return self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )

    # --------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: MegaConfig | str | os.PathLike | None = None,
        torch_dtype: torch.dtype | str | None = None,
        dtype: torch.dtype | str | None = None,
        device_map: str | int | torch.device | dict | None = None,
        ignore_mismatched_sizes: bool = False,
        strict: bool = False,
        output_loading_info: bool = False,
        use_safetensors: bool | None = None,
        **kwargs: Any,
    ) -> MegaPreTrainedModel | tuple[MegaPreTrainedModel, dict[str, list]]:
        """Load an HF Mega checkpoint folder (or a hub id, when online), as transformers does.

        - `config`: a `MegaConfig` (e.g. edited: `is_decoder=True, bidirectional=False`) or a path
          to read one from; default: the folder's config.json.
        - Other keyword arguments that are config fields override them (`num_labels=3`); the
          rest go to the class's `__init__` (`add_pooling_layer=False` for `MegaModel`); anything
          else is a TypeError. transformers' hub and loader arguments (`revision`, `cache_dir`,
          `token`, `local_files_only`, `trust_remote_code`, `low_cpu_mem_usage`, ...) are accepted.
        - `torch_dtype` (or `dtype`): a floating torch dtype, its name (`"float16"`,
          `"torch.bfloat16"`), or `"auto"` (config.json's `torch_dtype`, else the checkpoint's
          dtype). Default: float32, as transformers 4.x.
        - `device_map`: a device (`"cuda"`, `0`, `torch.device`), `"auto"` (the first GPU if
          there is one, else the CPU), or a dict sending every module to one device.
        - Missing weights are initialised and listed in a warning (an error with `strict=True`);
          a shape mismatch is an error naming the key unless `ignore_mismatched_sizes=True` (then
          it is re-initialised, with a warning). `output_loading_info=True` also returns
          `{"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}`.
        - `use_safetensors`: None prefers safetensors, True/False read only that format.
        """
        for name in _IGNORED_LOAD_KWARGS:
            kwargs.pop(name, None)
        hub = {name: kwargs.pop(name) for name in HUB_KWARGS if name in kwargs}
        target_dtype = _resolve_dtype(torch_dtype, dtype)
        folder = io.resolve_folder(pretrained_model_name_or_path, **hub)
        model_kwargs: dict[str, Any]
        if config is None:
            data = io.read_config_dict(folder)
            try:
                config, model_kwargs = MegaConfig.from_dict(
                    data, return_unused_kwargs=True, **kwargs
                )
            except ConfigError as err:
                raise io.CheckpointError(f"{folder / io.CONFIG_NAME}: {err}") from err
        elif isinstance(config, MegaConfig):
            config = copy.deepcopy(config)
            model_kwargs = {}
            for name, value in kwargs.items():
                if hasattr(config, name):
                    setattr(config, name, value)
                else:
                    model_kwargs[name] = value
        elif isinstance(config, (str, os.PathLike)):
            config, model_kwargs = MegaConfig.from_pretrained(
                config, return_unused_kwargs=True, **kwargs
            )
        else:
            raise TypeError(
                f"from_pretrained(config=...): expected a MegaConfig or a path, got "
                f"{type(config).__name__}"
            )
        config.name_or_path = str(pretrained_model_name_or_path)
        _check_init_kwargs(cls, model_args, model_kwargs)
        if config.add_cross_attention:
            raise io.CheckpointError(
                f"{folder / io.CONFIG_NAME}: add_cross_attention=True; cross-attention is out of "
                "scope for mega-lra, so this checkpoint cannot be loaded"
            )
        if config.normalization_type == "rmsnorm" and not config.rmsnorm_hf_compat:
            warnings.warn(
                f"{folder}: an rmsnorm checkpoint. mega-lra's RMSNorm normalises; HF's did not "
                "(it returned x * weight). Pass rmsnorm_hf_compat=True to reproduce the outputs "
                "this checkpoint gave in transformers.",
                stacklevel=2,
            )
        model = cls(config, *model_args, **model_kwargs)
        state, source = io.load_state_dict(folder, use_safetensors)
        info = model._load_hf_state_dict(state, source, ignore_mismatched_sizes, strict)
        if target_dtype == "auto":
            target_dtype = _auto_dtype(config, state)
        if target_dtype is not None:
            model = model.to(target_dtype)
        model.config.torch_dtype = str(model.dtype).replace("torch.", "")
        if device_map is not None:
            model = model.to(_resolve_device(device_map))
        model = model.eval()
        return (model, info) if output_loading_info else model

    def _load_hf_state_dict(
        self,
        state: dict[str, torch.Tensor],
        source: Path,
        ignore_mismatched_sizes: bool = False,
        strict: bool = False,
    ) -> dict[str, list]:
        state = io.rename_old_keys(state)
        own = self.state_dict()
        prefix = self.base_model_prefix + "."
        is_base = not hasattr(self, self.base_model_prefix)
        ckpt_has_prefix = any(k.startswith(prefix) for k in state)
        renamed = {}
        for key, value in state.items():
            if is_base and key.startswith(prefix):
                key = key[len(prefix) :]  # a head checkpoint loaded into MegaModel
            elif not is_base and not ckpt_has_prefix and (prefix + key) in own:
                key = prefix + key  # a MegaModel checkpoint loaded into a head
            renamed[key] = value
        tied = None
        if self._tied_head and self.config.tie_word_embeddings:
            tied = f"{self._tied_head}.weight"
            renamed.pop(tied, None)  # the head shares the word embeddings
        mismatched = [
            (key, tuple(value.shape), tuple(own[key].shape))
            for key, value in renamed.items()
            if key in own and own[key].shape != value.shape
        ]
        described = [f"{k}: checkpoint {a}, model {b}" for k, a, b in mismatched]
        if mismatched and not ignore_mismatched_sizes:
            raise io.CheckpointError(
                f"{source}: shapes do not match the config for "
                + "; ".join(described)
                + " (pass ignore_mismatched_sizes=True to re-initialise these)"
            )
        if mismatched:
            warnings.warn(
                f"{source}: weights with other shapes in the checkpoint, newly initialised: "
                + "; ".join(described),
                stacklevel=3,
            )
        for key, _, _ in mismatched:
            renamed.pop(key)
        loadable = {k: v for k, v in renamed.items() if k in own}
        unexpected = sorted(k for k in renamed if k not in own)
        skipped = {key for key, _, _ in mismatched}
        missing = sorted(k for k in own if k not in loadable and k != tied and k not in skipped)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing and strict:
            raise io.CheckpointError(f"{source}: missing weights {missing}")
        if missing:
            warnings.warn(
                f"{source}: weights not in the checkpoint, newly initialised: {missing}",
                stacklevel=3,
            )
        if unexpected:
            warnings.warn(
                f"{source}: checkpoint weights not used by {type(self).__name__}: {unexpected}",
                stacklevel=3,
            )
        with torch.no_grad():
            for key, value in loadable.items():
                own[key].copy_(value.to(own[key].dtype))
        self.tie_weights()
        return {
            "missing_keys": missing,
            "unexpected_keys": unexpected,
            "mismatched_keys": mismatched,
            "error_msgs": [],
        }

    # ---------------------------------------------------------------- saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        save_function: Any = None,
        push_to_hub: bool = False,
        max_shard_size: int | str = "5GB",
        safe_serialization: bool = True,
        variant: str | None = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Write config.json and the weights in a folder that transformers 4.x Mega loads.

        Weights go to `model.safetensors` (`safe_serialization=False`: `pytorch_model.bin`), or
        to shards of at most `max_shard_size` (`"5GB"`, `"200MB"`, `"2GiB"` or bytes) named as
        transformers names them, with their `.index.json`. A tied LM head weight is not written
        (it is the word embeddings). An existing checkpoint in the folder is never replaced
        silently: pass `overwrite=True` (the old weight files are then removed, so no stale shard
        or index is left to load). `is_main_process=False` writes nothing."""
        if push_to_hub:
            raise NotImplementedError(
                "save_pretrained(push_to_hub=True): mega-lra does not upload; save locally and "
                "upload the folder with huggingface_hub"
            )
        if variant is not None:
            raise NotImplementedError(
                f"save_pretrained(variant={variant!r}): weight variants are not supported"
            )
        unknown = sorted(set(kwargs) - set(_IGNORED_SAVE_KWARGS))
        if unknown:
            raise TypeError(f"save_pretrained: unexpected arguments {unknown}")
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder}: expected a folder to save the checkpoint in")
        if not is_main_process:
            return folder
        state = dict(self.state_dict() if state_dict is None else state_dict)
        head = self.get_output_embeddings()
        if head is not None and self.config.tie_word_embeddings:
            state.pop(f"{self._tied_head}.weight", None)  # the word embeddings (as HF)
        shards = io.split_into_shards(state, io.parse_size(max_shard_size))
        names = io.weight_file_names(safe_serialization, len(shards))
        index_name = io.SAFE_INDEX_NAME if safe_serialization else io.PT_INDEX_NAME
        new_files = set(names) | ({index_name} if len(shards) > 1 else set())

        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]
        config.torch_dtype = str(self.dtype).replace("torch.", "")
        if getattr(config, "transformers_version", None) is None:
            config.transformers_version = HF_TRANSFORMERS_VERSION
        config_text = config.to_json_string(use_diff=True)
        config_path = folder / io.CONFIG_NAME
        existing = io.existing_weight_files(folder)
        if config_path.is_file() and config_path.read_text(encoding="utf-8") != config_text:
            existing = [config_path, *existing]
        if existing and not overwrite:
            raise FileExistsError(
                f"{folder} already holds a checkpoint ({', '.join(p.name for p in existing)}); "
                "pass overwrite=True to replace it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        for name, shard in zip(names, shards):
            if safe_serialization:
                io.save_state_dict(shard, folder / name)
            else:
                io.save_bin(shard, folder / name, save_function)
        if len(shards) > 1:
            index = {
                "metadata": {
                    "total_size": sum(t.numel() * t.element_size() for t in state.values())
                },
                "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
            }
            tmp = folder / (index_name + ".tmp")
            tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, folder / index_name)
        for stale in io.existing_weight_files(folder):
            if stale.name not in new_files:
                stale.unlink()
        config.to_json_file(config_path, use_diff=True, overwrite=True)
        return folder


def _mean_rows(weight: torch.Tensor, count: int) -> torch.Tensor:
    """`count` new rows for a vocabulary matrix: the mean of `weight`'s rows plus Gaussian noise
    with 1e-9 times their covariance (just the mean when that covariance is not positive
    definite), drawn from torch's global generator, in float32 and cast back."""
    rows = weight.float()
    mean = rows.mean(0)
    centred = rows - mean
    covariance = 1e-9 * (centred.T @ centred) / rows.shape[0]
    factor, failed = torch.linalg.cholesky_ex(covariance)
    if int(failed) != 0:
        return mean.expand(count, -1).to(weight.dtype)
    noise = torch.randn(count, rows.shape[1], device=rows.device) @ factor.T
    return (mean + noise).to(weight.dtype)


# transformers' loader arguments that change nothing here (remote code, memory strategy, the Auto
# classes' and pipelines' bookkeeping); accepted so HF code runs unchanged.
_IGNORED_LOAD_KWARGS = (
    "trust_remote_code",
    "low_cpu_mem_usage",
    "code_revision",
    "adapter_kwargs",
    "proxies",
    "resume_download",
    "use_auth_token",
    "mirror",
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
    "_fast_init",
)
# save_pretrained arguments of transformers that only concern uploading or PEFT.
_IGNORED_SAVE_KWARGS = ("token", "save_peft_format", "commit_message", "private")


def _resolve_dtype(
    torch_dtype: torch.dtype | str | None, dtype: torch.dtype | str | None
) -> torch.dtype | str | None:
    """The dtype asked for by `torch_dtype` or `dtype` (transformers v5's name): a floating
    torch.dtype, "auto", or None."""
    if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
        raise ValueError(
            f"from_pretrained: torch_dtype={torch_dtype!r} and dtype={dtype!r} disagree; pass one"
        )
    value = dtype if dtype is not None else torch_dtype
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        resolved = getattr(torch, value.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(
                f"torch_dtype={value!r}: expected 'auto', a torch dtype, or its name such as "
                "'float32', 'float16', 'bfloat16', 'float64'"
            )
        value = resolved
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(
            f"torch_dtype={value!r}: expected 'auto' or a floating-point torch dtype "
            "(float32, float16, bfloat16, float64)"
        )
    return value


def _auto_dtype(config: MegaConfig, state: dict[str, torch.Tensor]) -> torch.dtype:
    """torch_dtype="auto": config.json's `torch_dtype` (or v5's `dtype`), else the dtype of the
    checkpoint's first floating-point tensor, else float32."""
    for name in (getattr(config, "torch_dtype", None), getattr(config, "dtype", None)):
        if isinstance(name, str) and name != "auto":
            return _resolve_dtype(name, None)
    for tensor in state.values():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _resolve_device(device_map: str | int | torch.device | dict) -> torch.device:
    """The one device `device_map` names (mega-lra does not split a model across devices)."""
    if isinstance(device_map, dict):
        devices = {str(v) for v in device_map.values()}
        if len(devices) != 1:
            raise ValueError(
                f"device_map={device_map!r}: mega-lra loads a model onto one device; expected "
                "every module mapped to the same device"
            )
        device_map = device_map[next(iter(device_map))]
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, int):
        return torch.device("cuda", device_map)
    try:
        return torch.device(device_map)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device_map={device_map!r}: expected 'auto', a device such as 'cpu' or 'cuda:0', a "
            "GPU index, or a dict mapping modules to one device"
        ) from err


def _check_init_kwargs(cls: type, args: tuple, kwargs: dict[str, Any]) -> None:
    """Arguments left after the config fields must be arguments of `cls.__init__` (as HF)."""
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in kwargs if k not in params or k in ("self", "config"))
    if unknown and not accepts_any:
        raise TypeError(
            f"{cls.__name__}.from_pretrained: {unknown} are neither MegaConfig fields nor "
            f"arguments of {cls.__name__}.__init__ "
            f"({[p for p in params if p not in ('self', 'config')]})"
        )
    positional = [p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD][
        2:
    ]
    if len(args) > len(positional):
        raise TypeError(
            f"{cls.__name__}.from_pretrained: {len(args)} extra positional arguments, "
            f"{cls.__name__}.__init__ takes {len(positional)} after the config"
        )


class MegaEmbeddings(nn.Module):
    """Word embeddings (+ token-type embeddings); no positions, no norm, no scaling (as HF)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.use_token_types = config.add_token_type_embeddings
        if self.use_token_types:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if self.use_token_types:
            if token_type_ids is None:
                token_type_ids = torch.zeros(
                    inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device
                )
            inputs_embeds = inputs_embeds + self.token_type_embeddings(token_type_ids)
        return inputs_embeds


class MegaPooler(nn.Module):
    """tanh(dense(first token))."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def _check_inputs(
    vocab_size: int,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
) -> tuple[int, int]:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
    if len(shape) != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {shape}")
    if input_ids is not None and input_ids.numel():
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids hold ids in [{low}, {high}], outside the vocabulary [0, {vocab_size})"
            )
    if token_type_ids is not None and tuple(token_type_ids.shape) != shape:
        raise ValueError(
            f"token_type_ids shape {tuple(token_type_ids.shape)} != input shape {shape}"
        )
    if attention_mask is not None and (
        attention_mask.dim() != 2 or attention_mask.size(0) != shape[0]
    ):
        raise ValueError(
            f"attention_mask must be (batch, length) with batch {shape[0]}, got "
            f"{tuple(attention_mask.shape)}"
        )
    return shape


class MegaModel(MegaPreTrainedModel):
    """Embeddings -> `num_hidden_layers` Mega blocks -> (final norm) -> (pooler).

    HF has no final norm; `config.final_norm=True` adds the original LRA encoder's."""

    def __init__(self, config: MegaConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embedding_layer = MegaEmbeddings(config)
        self.layers = nn.ModuleList(MegaBlock(config) for _ in range(config.num_hidden_layers))
        # the original LRA encoder normalises after the last block (pre-norm models); HF does not
        self.final_norm = SequenceNorm.from_config(config) if config.final_norm else None
        self.pooler = MegaPooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: list[AttentionState] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple:
        if encoder_hidden_states is not None or encoder_attention_mask is not None:
            raise ValueError("cross-attention (encoder_hidden_states) is not supported")
        if output_attentions:
            raise ValueError(
                "output_attentions=True is not supported: attention weights are never materialised"
            )
        config = self.config
        batch, length = _check_inputs(
            self.embedding_layer.word_embeddings.num_embeddings,
            input_ids,
            inputs_embeds,
            attention_mask,
            token_type_ids,
        )
        return_dict = config.use_return_dict if return_dict is None else return_dict
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        if use_cache is None:  # HF's default, except that training builds no state unasked
            use_cache = config.use_cache and not self.training
        use_cache = use_cache and config.is_decoder
        if past_key_values is not None and not config.is_decoder:
            raise ValueError("past_key_values need a decoder (config.is_decoder=True)")
        if attention_mask is not None:
            attention_mask = attention_mask[:, -length:]  # HF passes the full mask when decoding

        x = self.embedding_layer(input_ids, token_type_ids, inputs_embeds)  # (B, L, H)
        x, states, hidden = run_blocks(
            self.layers,
            x,
            attention_mask,
            past_key_values,
            use_cache=use_cache,
            gradient_checkpointing=self.gradient_checkpointing and self.training,
            output_hidden_states=output_hidden_states,
        )
        if self.final_norm is not None:
            x = self.final_norm(x, None if attention_mask is None else attention_mask.bool())
            if hidden is not None:
                hidden[-1] = x
        pooled = self.pooler(x) if self.pooler is not None else None
        hidden = tuple(hidden) if hidden is not None else None
        if not return_dict:
            return (x, pooled, hidden, states, None, None)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x, pooler_output=pooled, past_key_values=states, hidden_states=hidden
        )


def _as_tuple(loss: torch.Tensor | None, *outputs: Any, base: Any) -> tuple:
    """HF's return_dict=False layout: (loss,) if any, the head's outputs, then MegaModel's tuple
    from index 2 on (hidden states, cache, attentions, cross-attentions; None where absent)."""
    head = ((loss,) if loss is not None else ()) + outputs
    return head + (base.hidden_states, base.past_key_values, None, None)


class MegaForCausalLM(MegaPreTrainedModel):
    """LM head (optional dense + tanh, then the vocabulary projection) on a causal Mega."""

    _tied_head = "lm_head"

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        if not config.is_decoder:
            warnings.warn(
                "MegaForCausalLM with is_decoder=False is not causal; set is_decoder=True and "
                "bidirectional=False for language modelling",
                stacklevel=2,
            )
        self.mega = MegaModel(config, add_pooling_layer=False)
        if config.add_lm_hidden_dense_layer:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.hidden_activation = nn.Tanh()
        else:
            self.dense = None
            self.hidden_activation = None
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: list[AttentionState] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        if labels is not None:
            use_cache = False
        out = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        if self.dense is not None:
            hidden = self.hidden_activation(self.dense(hidden))
        logits = self.lm_head(hidden)  # (B, L, V)
        loss = None
        if labels is not None:  # predict token t+1 from position t
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1)
            )
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return CausalLMOutputWithCrossAttentions(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
        )

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Greedy or sampled continuation with the decoding state; see
        `mega_lra.generation.generate` for the arguments (attention_mask, max_new_tokens,
        do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, generator)."""
        from mega_lra.generation import generate

        return generate(self, input_ids, **kwargs)


class MegaForMaskedLM(MegaPreTrainedModel):
    _tied_head = "mlm_head"

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        if config.is_decoder:
            warnings.warn(
                "MegaForMaskedLM with is_decoder=True attends causally; an MLM is bidirectional",
                stacklevel=2,
            )
        self.mega = MegaModel(config, add_pooling_layer=False)
        if config.add_lm_hidden_dense_layer:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.hidden_activation = nn.Tanh()
        else:
            self.dense = None
            self.hidden_activation = None
        self.mlm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout_prob)  # present in HF, unused there too
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        hidden = out.last_hidden_state
        if self.dense is not None:
            hidden = self.hidden_activation(self.dense(hidden))
        logits = self.mlm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaClassificationHead(nn.Module):
    """First token -> dropout -> dense -> tanh -> dropout -> out_proj (as HF)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


def _classification_loss(
    config: MegaConfig, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """HF's rule: regression for 1 label, single-label for integer labels, else multi-label."""
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ConfigError(
        f"MegaConfig.problem_type={problem!r}: expected regression, "
        "single_label_classification or multi_label_classification"
    )


class MegaForSequenceClassification(MegaPreTrainedModel):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = MegaClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        logits = self.classifier(out.last_hidden_state)
        loss = None if labels is None else _classification_loss(self.config, logits, labels)
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaForMultipleChoice(MegaPreTrainedModel):
    """Inputs (B, num_choices, L) -> pooled first token -> one score per choice (B, num_choices)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.mega = MegaModel(config)  # with pooler, as HF
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultipleChoiceModelOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None or ref.dim() < 3:
            raise ValueError(
                "MegaForMultipleChoice expects inputs of shape (batch, choices, length)"
            )
        num_choices = ref.size(1)

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])

        out = self.mega(
            flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, num_choices)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaForTokenClassification(MegaPreTrainedModel):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaForQuestionAnswering(MegaPreTrainedModel):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        logits = self.qa_outputs(out.last_hidden_state)  # (B, L, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions outside the sequence are ignored
            start = start_positions.view(-1).clamp(0, ignored)
            end = end_positions.view(-1).clamp(0, ignored)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=ignored)
                + F.cross_entropy(end_logits, end, ignore_index=ignored)
            ) / 2
        if not return_dict:
            return _as_tuple(loss, start_logits, end_logits, base=out)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
        )
