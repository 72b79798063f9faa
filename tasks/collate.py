"""Length-aware collation: pad each batch to its longest row, rounded up to a chunk multiple.

Batches are dicts of tensors:

* tokens: ``input_ids`` (B, L) long, ``attention_mask`` (B, L) long (1 = real), ``lengths`` (B,),
  ``labels`` (B,)
* pixels / audio: ``inputs`` (B, L) float32 = ``(x * scale - mean) / std`` (0 at padding),
  ``attention_mask``, ``lengths``, ``labels``. ``mean`` and ``std`` are numbers, or lists with
  one value per position (SC-Raw's ``normalization=s4``: per time step statistics)
* retrieval (two documents): ``input_ids`` (B, 2, L), ``attention_mask`` (B, 2, L),
  ``lengths`` (B, 2), ``labels`` (B,)

``L = ceil(max(lengths) / m) * m`` with ``m = pad_to_multiple_of`` (the model's chunk size; no
rounding when ``m <= 0``). ``lengths`` are the true lengths (incl. eos) for masked mean pooling.

The collator takes either a ``pyarrow.Table`` (the fast path: `ArrowSplit.__getitems__` hands a
whole batch over without building per-row Python objects) or a list of row dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from tasks.tokenizers import BYTE_OFFSET, PAD_ID


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` >= n (n itself when ``multiple <= 0``)."""
    if multiple <= 0:
        return n
    return -(-n // multiple) * multiple


def _column(batch: pa.Table | Sequence[Mapping[str, Any]], name: str):
    """(flat values, lengths) of a list column."""
    if isinstance(batch, pa.Table):
        col = batch.column(name).combine_chunks()
        values = col.flatten().to_numpy(zero_copy_only=False)
        if pa.types.is_fixed_size_list(col.type):
            lengths = np.full(len(col), col.type.list_size, dtype=np.int64)
        else:
            lengths = col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        return values, lengths
    rows = [np.asarray(row[name]).reshape(-1) for row in batch]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.concatenate(rows) if rows else np.zeros(0)
    return values, lengths


def _labels(batch: pa.Table | Sequence[Mapping[str, Any]]) -> torch.Tensor:
    if isinstance(batch, pa.Table):
        arr = batch.column("labels").to_numpy()
    else:
        arr = np.asarray([int(row["labels"]) for row in batch])
    return torch.from_numpy(np.array(arr, dtype=np.int64))  # a writable copy


def pad_flat(values: np.ndarray, lengths: np.ndarray, width: int, fill: float, dtype) -> np.ndarray:
    """Rows of ``values`` (concatenated, with ``lengths``) right-padded to ``width``."""
    out = np.full((len(lengths), width), fill, dtype=dtype)
    out[np.arange(width)[None, :] < lengths[:, None]] = values
    return out


class Collator:
    """Callable collate function for one task (see module docstring for the batch keys)."""

    def __init__(
        self,
        input_kind: str,
        *,
        pad_to_multiple_of: int = 0,
        pad_id: int = PAD_ID,
        pair: bool = False,
        normalization: Mapping[str, float] | None = None,
        pixel_tokens: bool = False,
    ) -> None:
        self.input_kind = input_kind
        self.multiple = int(pad_to_multiple_of)
        self.pad_id = pad_id
        self.pair = pair
        self.norm = dict(normalization or {"scale": 1.0, "mean": 0.0, "std": 1.0})
        self.pixel_tokens = pixel_tokens
        # Per-position statistics (lists) become float32 vectors; numbers stay scalars.
        self.per_position = not np.isscalar(self.norm["mean"])
        if self.per_position:
            self.mean_vec = np.asarray(self.norm["mean"], dtype=np.float32)
            self.std_vec = np.asarray(self.norm["std"], dtype=np.float32)
            if self.mean_vec.shape != self.std_vec.shape or self.mean_vec.ndim != 1:
                raise ValueError(
                    f"normalization: mean {self.mean_vec.shape} and std {self.std_vec.shape} "
                    "must be numbers or two lists of one value per position"
                )

    @classmethod
    def for_task(cls, task: Any, manifest: Mapping[str, Any], pad_to_multiple_of: int) -> Collator:
        """The collator of a built task (normalisation from its manifest)."""
        pixel_tokens = task.input_kind == "tokens" and manifest.get("normalization") is not None
        return cls(
            task.input_kind,
            pad_to_multiple_of=pad_to_multiple_of,
            pad_id=task.pad_id,
            pair=task.head == "retrieval",
            normalization=manifest.get("normalization"),
            pixel_tokens=pixel_tokens,
        )

    def __call__(self, batch: pa.Table | Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if self.pair:
            return self._pair(batch)
        if self.input_kind == "tokens" and not self.pixel_tokens:
            values, lengths = _column(batch, "input_ids")
            return self._tokens(values, lengths, batch)
        values, lengths = _column(batch, "inputs")
        if self.pixel_tokens:
            return self._tokens(values.astype(np.int64) + BYTE_OFFSET, lengths, batch)
        width = round_up(int(lengths.max()), self.multiple)
        n = self.norm
        x = values.astype(np.float32) * np.float32(n["scale"])
        if self.per_position:
            inputs = self._per_position(x, lengths, width)
        else:
            x = (x - np.float32(n["mean"])) / np.float32(n["std"])
            inputs = pad_flat(x, lengths, width, 0.0, np.float32)
        return {
            "inputs": torch.from_numpy(inputs),
            "attention_mask": self._mask(lengths, width),
            "lengths": torch.from_numpy(lengths),
            "labels": _labels(batch),
        }

    def _per_position(self, x: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
        """Pad scaled values to (B, width), standardise position t with mean[t], std[t]."""
        n_pos = len(self.mean_vec)
        if int(lengths.max()) > n_pos:
            raise ValueError(
                f"a row of {int(lengths.max())} values is longer than the {n_pos} positions "
                "the normalisation statistics cover"
            )
        inputs = pad_flat(x, lengths, width, 0.0, np.float32)  # (B, width)
        k = min(width, n_pos)
        inputs[:, :k] = (inputs[:, :k] - self.mean_vec[:k]) / self.std_vec[:k]
        inputs[np.arange(width)[None, :] >= lengths[:, None]] = 0.0  # padding stays 0
        return inputs

    def _mask(self, lengths: np.ndarray, width: int) -> torch.Tensor:
        return torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))

    def _tokens(self, values, lengths, batch) -> dict[str, torch.Tensor]:
        width = round_up(int(lengths.max()), self.multiple)
        ids = pad_flat(values, lengths, width, self.pad_id, np.int64)
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": self._mask(lengths, width),
            "lengths": torch.from_numpy(lengths),
            "labels": _labels(batch),
        }

    def _pair(self, batch) -> dict[str, torch.Tensor]:
        v1, l1 = _column(batch, "input_ids_1")
        v2, l2 = _column(batch, "input_ids_2")
        width = round_up(int(max(l1.max(), l2.max())), self.multiple)
        ids = np.stack(
            [
                pad_flat(v1, l1, width, self.pad_id, np.int64),
                pad_flat(v2, l2, width, self.pad_id, np.int64),
            ],
            axis=1,
        )  # (B, 2, L)
        lengths = np.stack([l1, l2], axis=1)  # (B, 2)
        mask = (np.arange(width)[None, None, :] < lengths[:, :, None]).astype(np.int64)
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "lengths": torch.from_numpy(lengths),
            "labels": _labels(batch),
        }
