"""Collation: pad to the batch max rounded to the chunk size, masks and true lengths."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from tasks.collate import Collator, round_up


def _rows(lengths, key="input_ids"):
    return [
        {key: np.arange(3, 3 + n, dtype=np.int16), "labels": i % 2} for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize(
    ("n", "m", "out"), [(5, 0, 5), (5, -1, 5), (5, 4, 8), (8, 4, 8), (1, 128, 128)]
)
def test_round_up(n, m, out):
    assert round_up(n, m) == out


def test_tokens_pad_to_multiple_and_keep_lengths():
    batch = Collator("tokens", pad_to_multiple_of=4)(_rows([3, 6, 1]))
    assert batch["input_ids"].shape == (3, 8) and batch["input_ids"].dtype == torch.long
    assert batch["lengths"].tolist() == [3, 6, 1]
    assert batch["attention_mask"].sum(1).tolist() == [3, 6, 1]
    assert batch["input_ids"][0].tolist() == [3, 4, 5, 0, 0, 0, 0, 0]
    assert batch["labels"].tolist() == [0, 1, 0]
    assert set(batch) == {"input_ids", "attention_mask", "lengths", "labels"}


def test_no_rounding_when_multiple_is_zero():
    assert Collator("tokens", pad_to_multiple_of=0)(_rows([3, 6]))["input_ids"].shape == (2, 6)


def test_arrow_table_and_row_dicts_give_identical_batches():
    rows = _rows([2, 7, 4])
    table = pa.Table.from_pylist(
        [{"input_ids": r["input_ids"].tolist(), "labels": r["labels"]} for r in rows]
    )
    a = Collator("tokens", pad_to_multiple_of=3)(rows)
    b = Collator("tokens", pad_to_multiple_of=3)(table)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_retrieval_pairs_share_one_padded_length():
    rows = [
        {"input_ids_1": [5, 6, 1], "input_ids_2": [7, 1], "labels": 1},
        {"input_ids_1": [5, 1], "input_ids_2": [9, 9, 9, 9, 1], "labels": 0},
    ]
    batch = Collator("tokens", pair=True, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].shape == (2, 2, 8)
    assert batch["attention_mask"].shape == (2, 2, 8)
    assert batch["lengths"].tolist() == [[3, 2], [2, 5]]
    assert batch["input_ids"][1, 1, :6].tolist() == [9, 9, 9, 9, 1, 0]
    assert batch["attention_mask"][0].sum(-1).tolist() == [3, 2]


def test_signals_are_normalised_and_padding_is_zero():
    rows = [{"inputs": np.array([0, 255, 51], np.uint8), "labels": 1}]
    batch = Collator(
        "pixels", pad_to_multiple_of=4, normalization={"scale": 1 / 255, "mean": 0.5, "std": 0.5}
    )(rows)
    assert batch["inputs"].dtype == torch.float32
    assert batch["inputs"][0].tolist() == pytest.approx([-1.0, 1.0, -0.6, 0.0])
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0]
    assert batch["lengths"].tolist() == [3]


def test_per_position_statistics_standardise_each_position():
    rows = [
        {"inputs": np.array([10, -20, 30], np.int16), "labels": 0},
        {"inputs": np.array([0, 40, -8], np.int16), "labels": 1},
    ]
    norm = {"scale": 0.5, "mean": [1.0, -2.0, 3.0], "std": [2.0, 4.0, 0.5]}
    batch = Collator("audio", pad_to_multiple_of=4, normalization=norm)(rows)
    assert batch["inputs"].shape == (2, 4)
    # (x * 0.5 - mean[t]) / std[t], by hand; padding stays 0
    assert batch["inputs"][0].tolist() == pytest.approx([2.0, -2.0, 24.0, 0.0])
    assert batch["inputs"][1].tolist() == pytest.approx([-0.5, 5.5, -14.0, 0.0])
    table = pa.Table.from_pylist(
        [{"inputs": r["inputs"].tolist(), "labels": r["labels"]} for r in rows]
    )
    same = Collator("audio", pad_to_multiple_of=4, normalization=norm)(table)
    assert torch.equal(same["inputs"], batch["inputs"])


def test_rows_longer_than_the_statistics_are_refused():
    norm = {"scale": 1.0, "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    rows = [{"inputs": np.zeros(3, np.int16), "labels": 0}]
    with pytest.raises(ValueError, match="longer than the 2 positions"):
        Collator("audio", normalization=norm)(rows)
