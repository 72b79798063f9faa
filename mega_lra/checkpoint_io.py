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


def resolve_folder(path: str | os.PathLike) -> Path:
    """A local folder, or a hub id downloaded through huggingface_hub when it and the network are
    there (only config and weight files)."""
    folder = Path(path)
    if folder.is_dir():
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
        local = snapshot_download(
            text, allow_patterns=["*.json", "*.safetensors", "pytorch_model*.bin"]
        )
    except Exception as err:  # network, auth, missing repo
        raise CheckpointError(
            f"{text}: not a local folder, and downloading it from the Hugging Face hub failed "
            f"({type(err).__name__}: {err}). Download the folder where there is network and "
            "pass its path."
        ) from err
    return Path(local)


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


def load_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of the checkpoint in `folder` (safetensors preferred) and the file read."""
    for index_name, loader in ((SAFE_INDEX_NAME, _load_safetensors), (PT_INDEX_NAME, _load_bin)):
        index_path = folder / index_name
        if index_path.is_file():
            try:
                shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
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
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        return _load_safetensors(folder / SAFE_WEIGHTS_NAME), folder / SAFE_WEIGHTS_NAME
    if (folder / PT_WEIGHTS_NAME).is_file():
        return _load_bin(folder / PT_WEIGHTS_NAME), folder / PT_WEIGHTS_NAME
    raise CheckpointError(
        f"{folder}: no weights file (expected {SAFE_WEIGHTS_NAME}, {PT_WEIGHTS_NAME} or a "
        "sharded index)"
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
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
