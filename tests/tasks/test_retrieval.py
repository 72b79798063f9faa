"""Retrieval (AAN) reader: 5-column headerless TSVs, `.eval.` = val, byte pairs."""

from __future__ import annotations

import pytest

from tasks.errors import DataError
from tasks.retrieval import RetrievalTask
from tests.tasks.conftest import paths_for, write_aan


def test_reads_pairs_with_eval_as_val(data_dir):
    write_aan(data_dir / "lra_release" / "tsv_data", {"train": 6, "eval": 3, "test": 2})
    task = RetrievalTask(num_proc=1)
    built = task.build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert [rep["splits"][s]["rows"] for s in ("train", "val", "test")] == [6, 3, 2]
    assert rep["splits"]["train"]["labels"] == {"0": 3, "1": 3}
    assert built.manifest["splits"]["val"]["origin"] == "new_aan_pairs.eval.tsv"
    row = built.dataset["train"][1]
    assert row["labels"] == 1
    assert row["input_ids_1"] == [3 + b for b in b"paper train 1 text one"] + [1]
    assert row["input_ids_2"] == [3 + b for b in b"second doc 1"] + [1]
    assert task.head == "retrieval"


def test_s4_moved_folder_is_found(data_dir):
    write_aan(data_dir / "aan")
    assert RetrievalTask(num_proc=1).build(paths_for(data_dir), progress=False).cached is False


def test_each_document_is_truncated_on_its_own(data_dir):
    write_aan(data_dir / "aan")
    built = RetrievalTask(num_proc=1, max_length=4).build(paths_for(data_dir), progress=False)
    row = built.dataset["train"][0]
    assert len(row["input_ids_1"]) == 4 and len(row["input_ids_2"]) == 4
    assert row["input_ids_1"][-1] == row["input_ids_2"][-1] == 1


def test_truncated_line_names_file_and_line(data_dir):
    folder = write_aan(data_dir / "aan")
    with open(folder / "new_aan_pairs.test.tsv", "a") as f:
        f.write("1.0\tidX\tidY\tonly one text\n")
    with pytest.raises(DataError) as err:
        RetrievalTask(num_proc=1).build(paths_for(data_dir), progress=False)
    assert f"{folder / 'new_aan_pairs.test.tsv'}:3" in str(err.value)
    assert "expected 5 tab-separated fields" in str(err.value) and "found 4" in str(err.value)


def test_header_or_bad_label_names_file_and_line(data_dir):
    folder = write_aan(data_dir / "aan")
    text = (folder / "new_aan_pairs.train.tsv").read_text()
    (folder / "new_aan_pairs.train.tsv").write_text("label\tid1\tid2\ttext1\ttext2\n" + text)
    with pytest.raises(DataError, match=r"new_aan_pairs.train.tsv:1: label 'label' is not 0 or 1"):
        RetrievalTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_missing_eval_file_is_named(data_dir):
    folder = write_aan(data_dir / "aan")
    (folder / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(DataError, match="missing new_aan_pairs.eval.tsv"):
        RetrievalTask(num_proc=1).build(paths_for(data_dir), progress=False)
