"""`python -m tasks.prepare` and the conf/task nodes (Hydra compose of the real conf/ tree)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tasks.base import Task
from tasks.prepare import CONF_DIR, compose_config, load_task, main, make_task
from tests.tasks.conftest import paths_for, write_listops

TASK_NODES = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))


def test_every_task_is_configured():
    assert set(TASK_NODES) >= {
        "listops", "text", "retrieval", "image", "pathfinder", "pathx", "sc_raw",
        "listops_small", "pathfinder_small",
    }  # fmt: skip


@pytest.mark.parametrize("name", TASK_NODES)
def test_task_node_instantiates_a_real_class_with_matching_fields(name):
    cfg = compose_config([f"task={name}"])
    task = make_task(cfg.task)
    assert isinstance(task, Task) and task.name == name
    fields = {f.name for f in dataclasses.fields(task)}
    keys = {k for k in cfg.task if not k.startswith("_")}
    assert keys == fields  # the yaml node is exactly the object's fields
    assert task.input_kind in ("tokens", "pixels", "audio")
    assert task.head in ("pooled", "retrieval")
    assert (task.vocab_size is None) == (task.input_kind != "tokens")
    assert isinstance(task.val_is_test, bool)
    assert cfg.paths.cache_dir.endswith(".cache")


def _conforms(value, hint) -> bool:
    """Whether ``value`` has the type the dataclass field declares (bool is not an int)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        key, val = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _conforms(k, key) and _conforms(v, val) for k, v in value.items()
        )
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@pytest.mark.parametrize("name", TASK_NODES)
def test_task_fields_equal_the_yaml_file_and_have_the_declared_types(name):
    task = load_task(name)  # conf/prepare.yaml with task=<name>, composed by Hydra
    yaml_node = OmegaConf.to_container(
        OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"), resolve=True
    )
    hints = typing.get_type_hints(type(task))
    for key, written in yaml_node.items():
        if key.startswith("_"):
            continue
        value = getattr(task, key)
        assert value == written, f"{name}.yaml: {key}"
        assert _conforms(value, hints[key]), f"{name}: task.{key}={value!r} is not {hints[key]}"


def test_sc_words_are_the_paper_words_as_strings():
    words = load_task("sc_raw").words
    assert words == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    assert all(type(w) is str for w in words)


def test_paper_lengths_and_classes():
    expected = {
        "listops": (2001, 10, 18),
        "text": (4001, 2, 259),
        "retrieval": (4001, 2, 259),
        "image": (1024, 10, None),
        "pathfinder": (1024, 2, None),
        "pathx": (16384, 2, None),
        "sc_raw": (16000, 10, None),
    }
    for name, (length, classes, vocab) in expected.items():
        t = load_task(name)
        assert (t.max_length, t.num_classes, t.vocab_size) == (length, classes, vocab), name
    assert load_task("text").val_is_test is True
    assert load_task("retrieval").head == "retrieval"


def test_cli_prints_the_report_json_as_last_line(data_dir, capsys):
    write_listops(data_dir / "lra_release" / "listops-1000")
    rc = main(["task=listops", f"paths.data_dir={data_dir}", "task.num_proc=1", "progress=false"])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert set(report) == {"task", "source", "splits", "dropped", "manifest"}
    assert report["task"] == "listops" and report["source"] == "files"
    assert report["splits"]["train"]["rows"] == 4
    assert set(report["splits"]["val"]) == {"rows", "labels"}
    assert Path(report["manifest"]).is_file()
    assert str(data_dir / ".cache") in report["manifest"]


def test_cli_bad_data_exits_2_with_one_message(data_dir, capsys):
    rc = main(["task=retrieval", f"paths.data_dir={data_dir}", "task.source=files"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: task 'retrieval': no raw data found")
    assert "Traceback" not in err


def test_cli_bad_setting_names_the_key(data_dir, capsys):
    rc = main(["task=listops", f"paths.data_dir={data_dir}", "task.source=nowhere"])
    assert rc == 2
    assert "task.source='nowhere'" in capsys.readouterr().err


def test_generated_demo_via_cli(data_dir, capsys):
    rc = main(
        [
            "task=listops_small",
            f"paths.data_dir={data_dir}",
            "task.gen_rows.train=100",
            "task.gen_rows.val=20",
            "task.gen_rows.test=20",
            "progress=false",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["source"] == "generate"
    assert report["splits"]["train"]["rows"] == 100
    assert paths_for(data_dir)["data_dir"] in report["manifest"]
