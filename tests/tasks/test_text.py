"""Text (IMDB) reader, val_is_test convention, holdout split and the offline hub error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import DataError
from tasks.text import TextTask
from tests.tasks.conftest import paths_for, write_imdb

ROOT = Path(__file__).resolve().parents[2]


def test_reads_aclimdb_with_byte_ids_and_lra_validation(data_dir):
    write_imdb(data_dir, per_class=3)
    task = TextTask(num_proc=1)
    built = task.build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert rep["splits"]["train"] == {"rows": 6, "labels": {"0": 3, "1": 3}}
    assert rep["splits"]["val"] == rep["splits"]["test"]
    assert task.val_is_test and built.manifest["val_is_test"] is True
    first = built.dataset["train"][0]  # neg/0_1.txt, sorted, neg first
    assert first["labels"] == 0
    assert first["input_ids"] == [3 + b for b in b"neg review train 0"] + [1]


def test_truncates_each_review_to_max_length_including_eos(data_dir):
    write_imdb(data_dir, per_class=2)
    built = TextTask(num_proc=1, max_length=5).build(paths_for(data_dir), progress=False)
    assert all(len(ids) == 5 and ids[-1] == 1 for ids in built.dataset["train"]["input_ids"])


def test_holdout_split_is_seeded_and_disjoint(data_dir):
    write_imdb(data_dir, per_class=10)
    task = TextTask(num_proc=1, val_split="holdout", holdout_fraction=0.25)
    a = task.build(paths_for(data_dir), progress=False)
    assert not task.val_is_test and a.manifest["val_is_test"] is False
    tr, va = a.manifest["splits"]["train"]["indices"], a.manifest["splits"]["val"]["indices"]
    assert len(va) == 5 and len(tr) == 15 and not set(tr) & set(va)
    b = task.build(paths_for(data_dir), progress=False, rebuild=True)
    assert b.manifest["splits"]["val"]["indices"] == va
    other = TextTask(num_proc=1, val_split="holdout", holdout_fraction=0.25, seed=7)
    c = other.build(paths_for(data_dir), progress=False)
    assert c.manifest["splits"]["val"]["indices"] != va


def test_incomplete_aclimdb_names_the_missing_folder(data_dir):
    write_imdb(data_dir)
    for f in (data_dir / "aclImdb" / "test" / "pos").iterdir():
        f.unlink()
    (data_dir / "aclImdb" / "test" / "pos").rmdir()
    with pytest.raises(DataError, match=r"aclImdb folder is incomplete: missing test/pos"):
        TextTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_missing_data_suggests_download_and_hub(data_dir):
    with pytest.raises(DataError) as err:
        TextTask().build(paths_for(data_dir), progress=False)
    assert str(data_dir / "aclImdb") in str(err.value)
    assert "aclImdb_v1.tar.gz" in str(err.value) and "task.source=hub" in str(err.value)


def test_bad_val_split_setting_is_refused():
    with pytest.raises(DataError, match="task.val_split"):
        TextTask(val_split="train")


def test_hub_source_offline_gives_one_clear_error(tmp_path):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.prepare",
            "task=text",
            "task.source=hub",
            f"task.hub_cache_dir={tmp_path / 'hf'}",
            f"paths.data_dir={tmp_path / 'data'}",
            "progress=false",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "stanfordnlp/imdb" in proc.stderr and "offline mode" in proc.stderr
    assert "Fix:" in proc.stderr


def test_hub_rows_are_tokenised_like_files(data_dir, monkeypatch):
    """The hub path (stubbed: no network) yields the same ids as the files path."""
    import datasets

    write_imdb(data_dir, per_class=2)
    files = TextTask(num_proc=1).build(paths_for(data_dir), progress=False)

    def fake_load(hub_id, cache_dir, splits):
        out = {}
        for s in ("train", "test"):
            texts, labels = [], []
            for lab, name in ((0, "neg"), (1, "pos")):
                for p in sorted((data_dir / "aclImdb" / s / name).iterdir()):
                    texts.append(p.read_text())
                    labels.append(lab)
            out[s] = datasets.Dataset.from_dict({"text": texts, "label": labels})
        return datasets.DatasetDict(out)

    monkeypatch.setattr("tasks.text.load_hub", fake_load)
    hub = TextTask(num_proc=1, source="hub").build(paths_for(data_dir), progress=False)
    assert hub.report()["source"] == "hub"
    assert hub.dataset["test"]["input_ids"] == files.dataset["test"]["input_ids"]
    assert np.array_equal(hub.dataset["train"]["labels"], files.dataset["train"]["labels"])
    assert json.loads(hub.manifest_path.read_text())["source"]["hub_id"] == "stanfordnlp/imdb"
