"""Reading and writing Hugging Face-format Mega checkpoint folders.

A folder holds `config.json` and the weights as `model.safetensors` (preferred), a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` (+ `.index.json`). Checkpoints are untrusted
input: safetensors are read as data only; a `.bin` pickle is read with
`torch.load(weights_only=True)`, which refuses any pickle that would construct arbitrary objects
(run code), and such a file is refused with that reason. Older Mega checkpoints use the names
from before HF's rename (`encoders.` -> `layers.`, `move.` -> `ema_gate.`); they are renamed
on load.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import torch

from mega_lra.atomic_files import atomic_path

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_INDEX_NAME = "pytorch_model.bin.index.json"

_OLD_NAMES = [
    (re.compile(r"(^|\.)encoders\."), r"\1layers."),
    (re.compile(r"(^|\.)move\."), r"\1ema_gate."),
]


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used, with the path and what was expected."""


def resolve_folder(
    path: str | os.PathLike,
    *,
    subfolder: str = "",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """A local folder, or a hub id downloaded through huggingface_hub when it and the network are
    there (only config and weight files). The keyword arguments are transformers' hub arguments;
    `subfolder` also applies to a local folder."""
    folder = Path(path)
    if folder.is_dir():
        if subfolder:
            folder = folder / subfolder
            if not folder.is_dir():
                raise CheckpointError(f"{folder}: no such subfolder (subfolder={subfolder!r})")
        return folder
    if folder.exists():
        raise CheckpointError(f"{folder}: expected a checkpoint folder, found a file")
    text = str(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) is None:
        raise CheckpointError(
            f"{text}: no such checkpoint folder (expected a folder with config.json and "
            "model.safetensors or pytorch_model.bin, or a hub id 'owner/name')"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub comes with datasets
        raise CheckpointError(
            f"{text}: not a local folder, and huggingface_hub is not installed to download it"
        ) from err
    try:
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        local = snapshot_download(
            text,
            allow_patterns=[
                f"{prefix}{p}" for p in ("*.json", "*.safetensors", "pytorch_model*.bin")
            ],
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    except Exception as err:  # network, auth, missing repo
        raise CheckpointError(
            f"{text}: not a local folder, and downloading it from the Hugging Face hub failed "
            f"({type(err).__name__}: {err}). Download the folder where there is network and "
            "pass its path."
        ) from err
    return Path(local) / subfolder if subfolder else Path(local)


def read_config_dict(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME} (expected an HF Mega checkpoint folder)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if data.get("model_type", "mega") != "mega":
        raise CheckpointError(
            f"{path}: model_type={data.get('model_type')!r}, expected 'mega' "
            "(not a Mega checkpoint)"
        )
    return data


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused: this pickle asks to construct objects beyond plain tensors, which "
            "could run arbitrary code on load (torch.load weights_only=True rejected it: "
            f"{str(err).splitlines()[0]}). Convert it to safetensors where you trust it."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({err})") from err


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read as safetensors ({err})") from err


def load_state_dict(
    folder: Path, use_safetensors: bool | None = None
) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of the checkpoint in `folder` and the file read: safetensors preferred
    (`use_safetensors=None`), only safetensors (`True`) or only `pytorch_model.bin` (`False`)."""
    formats = []
    if use_safetensors is not False:
        formats.append((SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, _load_safetensors))
    if use_safetensors is not True:
        formats.append((PT_INDEX_NAME, PT_WEIGHTS_NAME, _load_bin))
    for index_name, file_name, loader in formats:
        index_path = folder / index_name
        if index_path.is_file():
            try:
                shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as err:
                raise CheckpointError(
                    f"{index_path}: expected a JSON object with a 'weight_map'"
                ) from err
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                shard_path = folder / shard
                if not shard_path.is_file():
                    raise CheckpointError(f"{index_path}: names shard {shard}, which is missing")
                state.update(loader(shard_path))
            return state, index_path
        if (folder / file_name).is_file():
            return loader(folder / file_name), folder / file_name
    wanted = " or ".join(f"{name} (or {index})" for index, name, _ in formats)
    raise CheckpointError(
        f"{folder}: no weights file (expected {wanted}"
        + (f"; use_safetensors={use_safetensors}" if use_safetensors is not None else "")
        + ")"
    )


def rename_old_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map pre-release key names (`encoders.`, `move.`) to HF's released names."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _OLD_NAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def save_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write safetensors (with the `format: pt` metadata transformers requires), atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def save_bin(state: dict[str, torch.Tensor], path: Path, save_function=None) -> None:
    """Write a `pytorch_model.bin`-style pickle of plain tensors, atomically."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        (save_function or torch.save)(tensors, str(tmp))


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or a string such as "5GB" (10^9) or "2GiB" (2^30), as HF."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"max_shard_size={size!r}: expected a positive size")
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
    if match is None or float(match[1]) <= 0 or match[2] not in _SIZE_UNITS:
        raise ValueError(
            f"max_shard_size={size!r}: expected a positive number of bytes or a string such as "
            "'5GB', '200MB' or '2GiB'"
        )
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


def split_into_shards(
    state: dict[str, torch.Tensor], max_bytes: int
) -> list[dict[str, torch.Tensor]]:
    """Consecutive groups of `state` (in its order), each at most `max_bytes` unless a single
    tensor is larger (it then has a shard of its own)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for key, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and used + size > max_bytes:
            shards.append({})
            used = 0
        shards[-1][key] = tensor
        used += size
    return shards


def weight_file_names(safe: bool, count: int) -> list[str]:
    """File names transformers uses: one file, or `model-00001-of-00003.safetensors` shards."""
    single, stem, ext = (
        (SAFE_WEIGHTS_NAME, "model", "safetensors")
        if safe
        else (PT_WEIGHTS_NAME, "pytorch_model", "bin")
    )
    if count == 1:
        return [single]
    return [f"{stem}-{i:05d}-of-{count:05d}.{ext}" for i in range(1, count + 1)]


_WEIGHT_FILE = re.compile(
    r"(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?"
)


def existing_weight_files(folder: Path) -> list[Path]:
    """Checkpoint weight files (single, shards, indexes) already in `folder`."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _WEIGHT_FILE.fullmatch(p.name))
