"""`results.json` as one record (`mega_lra.results.record`): what the runner writes reads back
equal, files from before schema 2 are read with the right identity fields, a bad file is refused
naming the file and the key, and a model's identity fields come from its `model_info` only."""

from __future__ import annotations

import csv
import io
import json
import statistics

import pytest

from mega_lra import table
from mega_lra.models.catalog import model_label, model_names
from mega_lra.results.record import (
    IDENTITY_FIELDS,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    Results,
    ResultsError,
    read_results,
)
from tests.results.helpers import PAPER, results_data, seeds_of, write_run

# A model that is not Mega: its describe() has none of Mega's fields but one of them.
CONV_INFO = {
    "backbone": "my_package.conv.ConvBackbone",
    "label": "Masked conv",
    "mixer": "conv1d",
    "kernel_size": 3,
    "normalization_type": "layernorm",
}


def record(**changes) -> Results:
    data = results_data(**changes)
    del data["schema_version"]
    for key in IDENTITY_FIELDS:  # read from model_info
        del data[key]
    return Results(**data)


# --------------------------------------------------------------------------- round trip
def test_written_record_reads_back_equal_and_the_file_is_to_dict(tmp_path):
    mine = record(model="mega_chunk", task="text", seed=4, best_val_accuracy=None)
    path = mine.write(tmp_path / "run")
    assert path == tmp_path / "run" / "results.json"
    data = json.loads(path.read_text())
    assert data == mine.to_dict()
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert set(data) == {"schema_version", *REQUIRED_KEYS, "model_info", "test_checkpoint"}
    # the top-level identity fields are model_info's
    assert {k: data[k] for k in IDENTITY_FIELDS} == {
        k: mine.model_info.get(k) for k in IDENTITY_FIELDS
    }
    assert read_results(path) == mine == read_results(tmp_path / "run")  # file or run dir
    assert Results.from_dict(mine.to_dict()) == mine
    assert not [p for p in path.parent.iterdir() if p.name != "results.json"]  # no temp left


def test_model_info_is_kept_as_the_file_holds_it():
    info = {"mixer": "mega", "chunk_size": 64, "layers": (1, 2)}
    mine = record(model_info=info)
    assert mine.model_info == {"mixer": "mega", "chunk_size": 64, "layers": [1, 2]}
    info["chunk_size"] = 7  # the caller's dict is not the record's
    assert mine.chunk_size == 64


# --------------------------------------------------------------------------- old files
def old_format(**fields) -> dict:
    """A current results.json without what schema 2 added (schema_version, model_info)."""
    data = results_data(**fields)
    for key in ("schema_version", "model_info"):
        del data[key]
    return data


@pytest.mark.parametrize("model", ["mega", "mega_chunk", "transformer"])
def test_a_file_from_before_schema_2_is_read_with_its_identity_fields(tmp_path, model):
    data = old_format(model=model, task="image", seed=2)
    (tmp_path / "results.json").write_text(json.dumps(data))
    got = read_results(tmp_path)
    for key in IDENTITY_FIELDS:
        assert getattr(got, key) == data[key], key
    # model_info rebuilt from the top-level fields that are not null
    assert got.model_info == {k: data[k] for k in IDENTITY_FIELDS if data[k] is not None}
    assert got.schema_version == SCHEMA_VERSION  # read as the current record
    new = got.to_dict()
    assert {k: new[k] for k in data} == data  # nothing else changes
    assert Results.from_dict(new) == got


def test_an_old_file_without_test_checkpoint_is_read():
    data = old_format()
    del data["test_checkpoint"]
    assert Results.from_dict(data).test_checkpoint is None


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("key", [*REQUIRED_KEYS, "model_info"])
def test_a_missing_key_names_the_file_and_the_key(tmp_path, key):
    data = results_data()
    del data[key]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=f"missing required key '{key}'") as err:
        read_results(path)
    assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "change, key",
    [
        ({"test_accuracy": 63.1}, "test_accuracy"),  # percent, not a fraction
        ({"best_val_accuracy": -0.1}, "best_val_accuracy"),
        ({"seed": "1"}, "seed"),
        ({"val_is_test": 1}, "val_is_test"),
        ({"data_source": "web"}, "data_source"),
        ({"schema_version": SCHEMA_VERSION + 1}, "schema_version"),
        ({"model_info": ["mega"]}, "model_info"),
        ({"model_info": {"chunk_size": "128"}}, "chunk_size"),
        ({"test_checkpoint": 3}, "test_checkpoint"),
    ],
)
def test_a_bad_value_names_the_file_and_the_key(tmp_path, change, key):
    data = {**results_data(), **change}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=f"key '{key}' = ") as err:
        read_results(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "model_info" in str(err.value) or key != "chunk_size"


def test_top_level_identity_disagreeing_with_model_info_is_refused(tmp_path):
    data = results_data(model="mega_chunk")
    data["chunk_size"] = -1  # model_info says 128
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="key 'chunk_size' = -1 disagrees with model_info"):
        read_results(path)


def test_unreadable_files_name_the_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"task": "listops",')
    with pytest.raises(ResultsError, match=f"{path}: not valid JSON"):
        read_results(path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultsError, match=f"{path}: expected a JSON object, got list"):
        read_results(path)
    with pytest.raises(ResultsError, match="cannot read"):
        read_results(tmp_path / "nothing")


def test_a_record_is_checked_when_built():
    with pytest.raises(ResultsError, match="key 'test_accuracy' = 1.5"):
        record(test_accuracy=1.5)
    with pytest.raises(ResultsError, match="model_info: key 'ema_projection_size' = -2"):
        record(model_info={"ema_projection_size": -2})


# --------------------------------------------------------------------------- identity
def test_identity_fields_come_from_model_info_never_from_defaults():
    conv = record(model="conv1d", model_info=CONV_INFO)
    assert conv.attention_activation is None
    assert conv.chunk_size is None and conv.ema_projection_size is None
    assert conv.normalization_type == CONV_INFO["normalization_type"]
    data = conv.to_dict()
    assert [data[k] for k in IDENTITY_FIELDS] == [None, None, None, "layernorm"]
    assert record(model_info={}).to_dict()["attention_activation"] is None


def test_a_model_outside_the_paper_is_a_table_2_row_under_its_label(tmp_path, capsys):
    # "conv1d_test" has no conf/model file: its label is the one its runs recorded
    assert "conv1d_test" not in model_names()
    conv = {
        task: seeds_of(
            tmp_path,
            f"conv/{task}",
            accs,
            model="conv1d_test",
            task=task,
            group=f"conv-{task}",
            model_info=CONV_INFO,
        )
        for task, accs in (("listops", [0.31, 0.35]), ("image", [0.52, 0.56, 0.5]))
    }
    # another model outside the paper, labelled to sort before it, and the paper's models
    other = {**CONV_INFO, "label": "A conv"}
    seeds_of(tmp_path, "a", [0.2], model="a_conv_test", group="a", model_info=other)
    for model in ("transformer", "mega_chunk", "mega"):
        seeds_of(tmp_path, model, [0.4], model=model, group=model)

    assert table.main([str(tmp_path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for task, header in (("listops", "ListOps"), ("image", "Image")):
        (got,) = [r for r in rows if r["key"] == "conv1d_test" and r["column"] == header]
        assert got["row"] == CONV_INFO["label"]
        # not filtered by the paper's Mega settings (image: laplace, h = 16; it has neither)
        assert float(got["mean"]) == pytest.approx(statistics.mean(conv[task]))
        assert got["paper"] == "" and got["diff"] == ""

    assert table.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.split("### Notes")[0]
    first = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    ours = [c for c in first[1:] if "(paper" not in c and not c.startswith("Δ")]
    run = ("transformer", "mega_chunk", "mega")  # the paper's rows without runs: paper line only
    paper_rows = [model_label(m) for m in PAPER.lra_rows if m in run]  # the paper's order
    assert [f"{m} (ours)" for m in paper_rows] == ours[:3]
    assert ours[3:] == ["A conv", "Masked conv"]  # then by label, without paper rows


def test_an_old_format_run_and_a_new_one_of_a_group_make_one_cell(tmp_path, capsys):
    write_run(tmp_path, "old", legacy=True, seed=0, test_accuracy=0.6)
    write_run(tmp_path, "new", seed=1, test_accuracy=0.7)
    assert table.main([str(tmp_path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    (got,) = [r for r in rows if r["key"] == "mega" and r["column"] == "ListOps"]
    assert got["n"] == "2" and got["seeds"] == "0;1"
    assert float(got["mean"]) == pytest.approx(statistics.mean([60.0, 70.0]))
