"""ListOps reader, generator, cache and bad-input behaviour (tasks/listops.py)."""

from __future__ import annotations

import json
import os
import random

import pytest

from tasks.base import Task
from tasks.errors import DataError
from tasks.generators.listops_expressions import ListOpsSpec, generate_rows, sample, write_listops
from tasks.listops import ListOpsTask
from tasks.tokenizers import encode_listops
from tests.tasks.conftest import LISTOPS_ROWS, paths_for
from tests.tasks.conftest import write_listops as write_fixture


def _task(**kw) -> ListOpsTask:
    return ListOpsTask(num_proc=1, **kw)


def _evaluate(expr: str) -> int:
    """Independent evaluator of the ListOps text format (parentheses ignored)."""
    stack: list = []
    for tok in expr.replace("(", " ").replace(")", " ").split():
        if tok.startswith("["):
            stack.append((tok, []))
        elif tok == "]":
            op, args = stack.pop()
            s = sorted(args)
            value = {
                "[MIN": min(args),
                "[MAX": max(args),
                "[SM": sum(args) % 10,
                "[MED": int((s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2),
            }[op]
            if not stack:
                return value
            stack[-1][1].append(value)
        else:
            if not stack:
                return int(tok)
            stack[-1][1].append(int(tok))
    raise AssertionError("unbalanced")


def test_reads_official_layout_counts_labels_and_ids(data_dir):
    write_fixture(data_dir / "lra_release" / "lra_release" / "listops-1000")
    built = _task().build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert rep["source"] == "files"
    assert {s: rep["splits"][s]["rows"] for s in ("train", "val", "test")} == {
        "train": 4,
        "val": 2,
        "test": 2,
    }
    assert rep["splits"]["train"]["labels"]["9"] == 1
    assert rep["splits"]["train"]["labels"]["4"] == 2
    assert sum(rep["splits"]["train"]["labels"].values()) == 4
    row = built.dataset["train"][0]
    assert row["input_ids"] == [14, 5, 12, 17, 1]
    assert row["labels"] == 9


@pytest.mark.parametrize(
    "layout", ["lra_release/lra_release/listops-1000", "lra_release/listops-1000", "listops"]
)
def test_every_documented_location_is_found(data_dir, layout):
    write_fixture(data_dir / layout)
    raw = _task().locate(paths_for_obj(data_dir))
    assert raw.root == data_dir / layout


def paths_for_obj(data_dir):
    from tasks.base import Paths

    return Paths.coerce(paths_for(data_dir))


def test_search_prefers_the_nested_official_layout(data_dir):
    write_fixture(data_dir / "listops")
    write_fixture(data_dir / "lra_release" / "lra_release" / "listops-1000")
    raw = _task().locate(paths_for_obj(data_dir))
    assert raw.root == data_dir / "lra_release" / "lra_release" / "listops-1000"


def test_missing_files_error_lists_every_searched_path(data_dir):
    with pytest.raises(DataError) as err:
        _task(source="files").build(paths_for(data_dir), progress=False)
    msg = str(err.value)
    for p in ["lra_release/lra_release/listops-1000", "lra_release/listops-1000", "listops"]:
        assert str(data_dir / p) in msg
    assert "lra_release.gz" in msg and "task.source=generate" in msg


def test_incomplete_folder_names_the_missing_file(data_dir):
    folder = write_fixture(data_dir / "listops")
    (folder / "basic_val.tsv").unlink()
    with pytest.raises(DataError, match="missing basic_val.tsv"):
        _task().build(paths_for(data_dir), progress=False)


def test_truncated_line_names_file_and_line(data_dir):
    folder = write_fixture(data_dir / "listops")
    with open(folder / "basic_train.tsv", "a") as f:
        f.write("( ( [MAX 2 ) 9")  # cut before the tab and label
    with pytest.raises(DataError) as err:
        _task().build(paths_for(data_dir), progress=False)
    assert f"{folder / 'basic_train.tsv'}:6" in str(err.value)
    assert "expected 2 tab-separated fields" in str(err.value)
    assert not list((data_dir / ".cache" / "listops").glob("*/manifest.json"))


def test_non_integer_label_names_file_and_line(data_dir):
    folder = write_fixture(data_dir / "listops")
    (folder / "basic_test.tsv").write_text("Source\tTarget\n( ( [MAX 2 ) ] )\tnine\n")
    with pytest.raises(DataError, match=r"basic_test.tsv:2: Target 'nine' is not an integer"):
        _task().build(paths_for(data_dir), progress=False)


def test_empty_split_is_an_error(data_dir):
    folder = write_fixture(data_dir / "listops")
    (folder / "basic_val.tsv").write_text("Source\tTarget\n")
    with pytest.raises(DataError, match="split 'val' of task 'listops' is empty"):
        _task().build(paths_for(data_dir), progress=False)


def test_second_build_reuses_the_cache_without_processing(data_dir, monkeypatch):
    write_fixture(data_dir / "listops")
    first = _task().build(paths_for(data_dir), progress=False)
    assert not first.cached

    def boom(*a, **k):
        raise AssertionError("process() ran again")

    monkeypatch.setattr(ListOpsTask, "process", boom)
    second = _task().build(paths_for(data_dir), progress=False)
    assert second.cached
    assert second.manifest_path == first.manifest_path
    assert second.manifest["created_unix"] == first.manifest["created_unix"]


def test_changed_parameter_or_source_file_invalidates_the_cache(data_dir):
    folder = write_fixture(data_dir / "listops")
    a = _task().build(paths_for(data_dir), progress=False)
    b = _task(max_length=3).build(paths_for(data_dir), progress=False)
    assert not b.cached and b.manifest_path != a.manifest_path
    assert b.dataset["train"][0]["input_ids"] == [14, 5, 1]
    # num_proc does not change the data: same cache
    assert ListOpsTask(num_proc=2).build(paths_for(data_dir), progress=False).cached
    # editing a source file changes its fingerprint
    write_fixture(folder, rows=LISTOPS_ROWS[1:] + LISTOPS_ROWS[:1])
    os.utime(folder / "basic_train.tsv", ns=(1, 1))
    c = _task().build(paths_for(data_dir), progress=False)
    assert not c.cached and c.manifest_path != a.manifest_path
    assert c.dataset["train"][0]["labels"] == 4


def test_interrupted_build_leaves_no_trusted_cache(data_dir, monkeypatch):
    write_fixture(data_dir / "listops")
    real = ListOpsTask.process

    def interrupted(self, raw, work, progress):
        real(self, raw, work, progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(ListOpsTask, "process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _task().build(paths_for(data_dir), progress=False)
    cache = data_dir / ".cache" / "listops"
    assert list(cache.iterdir()) == []  # neither a final folder nor a tmp folder
    monkeypatch.setattr(ListOpsTask, "process", real)
    assert not _task().build(paths_for(data_dir), progress=False).cached


def test_manifest_records_source_hashes_and_split_origin(data_dir):
    write_fixture(data_dir / "listops")
    built = _task().build(paths_for(data_dir), progress=False)
    m = json.loads(built.manifest_path.read_text())
    assert [f["path"].rsplit("/", 1)[-1] for f in m["source"]["files"]] == [
        "basic_train.tsv",
        "basic_val.tsv",
        "basic_test.tsv",
    ]
    assert all(len(f["sha256"]) == 64 for f in m["source"]["files"])
    assert m["splits"]["val"]["origin"] == "basic_val.tsv"
    assert m["params"]["max_length"] == 2001


def test_generator_values_match_an_independent_evaluator():
    rng = random.Random(3)
    spec = ListOpsSpec(max_depth=5, max_args=5, min_length=5, max_length=60)
    for _ in range(300):
        text, value = sample(rng, spec)
        assert _evaluate(text) == value
        n = len(encode_listops(text, 10_000)) - 1  # tokens without eos
        assert spec.min_length < n < spec.max_length


def test_generator_is_seeded_and_independent_of_workers():
    spec = ListOpsSpec(max_depth=5, max_args=4, min_length=4, max_length=40)
    a = generate_rows(600, spec, seed=1, num_proc=1, progress=False)
    b = generate_rows(600, spec, seed=1, num_proc=2, progress=False)
    c = generate_rows(600, spec, seed=2, num_proc=1, progress=False)
    assert a == b
    assert a != c
    assert len({t for t, _ in a}) == 600  # distinct rows, so no row is in two splits


def test_generator_writes_the_official_tsv_format(tmp_path):
    spec = ListOpsSpec(max_depth=4, max_args=3, min_length=3, max_length=30)
    write_listops(tmp_path, {"train": 5, "val": 2, "test": 2}, spec, seed=0, progress=False)
    lines = (tmp_path / "basic_train.tsv").read_text().splitlines()
    assert lines[0] == "Source\tTarget"
    assert len(lines) == 6
    src, target = lines[1].split("\t")
    assert src.startswith("( ") and src.endswith(" )") and "]" in src
    assert _evaluate(src) == int(target)


def test_generate_source_builds_the_small_demo_task(data_dir):
    task = _task(
        name="listops_small",
        source="generate",
        max_length=64,
        gen_rows={"train": 300, "val": 50, "test": 50},
        gen_max_depth=5,
        gen_max_args=4,
        gen_min_length=4,
        gen_max_length=64,
    )
    built = task.build(paths_for(data_dir), progress=False)
    assert built.report()["source"] == "generate"
    assert [len(built.dataset[s]) for s in ("train", "val", "test")] == [300, 50, 50]
    gen = list((data_dir / "generated").glob("listops_small-*/listops-1000/basic_train.tsv"))
    assert len(gen) == 1  # the official layout, read by the same reader
    assert max(len(r) for r in built.dataset["train"]["input_ids"]) <= 64


def test_auto_reads_files_and_never_generates(data_dir):
    task = _task(source="auto", gen_rows={"train": 20, "val": 5, "test": 5})
    with pytest.raises(DataError, match="no raw data found"):
        task.build(paths_for(data_dir), progress=False)
    assert not (data_dir / "generated").exists()  # nothing generated behind the user's back
    assert not (data_dir / ".cache").exists()
    write_fixture(data_dir / "listops")
    assert task.build(paths_for(data_dir), progress=False).source == "files"


def test_invalid_settings_are_refused_with_the_key():
    with pytest.raises(DataError, match="task.source='hub'"):
        ListOpsTask(source="hub")
    with pytest.raises(DataError, match="task.num_classes=5"):
        ListOpsTask(num_classes=5)
    with pytest.raises(DataError, match="task.vocab_size"):
        ListOpsTask(vocab_size=20)
    assert isinstance(ListOpsTask(), Task)
