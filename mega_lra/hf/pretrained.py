"""Loading, saving and vocabulary resizing for the Mega family: transformers' `PreTrainedModel`
plumbing, kept apart from the model classes in `mega_lra.hf.modeling`.

`PretrainedMixin` gives `MegaPreTrainedModel` (and so every class of the family):
- `from_pretrained`: reads an HF Mega checkpoint folder (config.json + model.safetensors or
  pytorch_model.bin, sharded or not, through `mega_lra.hf.state_dict`), merges config overrides
  and `__init__` arguments, renames old HF keys, moves a `MegaModel` checkpoint into a head (and
  back), reports missing/unexpected/mismatched weights, resolves `torch_dtype` and `device_map`;
- `save_pretrained`: writes a folder transformers 4.x Mega loads (safetensors or `.bin`,
  sharded with an index), never replacing an existing checkpoint silently;
- `resize_token_embeddings`: transformers' vocabulary resizing (mean or init rows, tied heads).

The mixin expects the host class to define `config`, `base_model_prefix`, `_tied_head`,
`_init_weights`, `get_/set_input_embeddings`, `get_/set_output_embeddings` and `tie_weights`.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mega_lra.atomic_files import write_text
from mega_lra.hf import state_dict as io
from mega_lra.hf.configuration import HUB_KWARGS, ConfigError, MegaConfig

if TYPE_CHECKING:
    from mega_lra.hf.modeling import MegaPreTrainedModel

HF_TRANSFORMERS_VERSION = "4.41.2"  # written into config.json for transformers' loader


class PretrainedMixin:
    """`from_pretrained`, `save_pretrained` and `resize_token_embeddings` (see the module text)."""

    # ------------------------------------------------------------- resizing
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
            write_text(folder / index_name, json.dumps(index, indent=2, sort_keys=True) + "\n")
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
