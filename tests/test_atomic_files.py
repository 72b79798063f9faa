"""`mega_lra.atomic_files`: a written file is the old one or the new one, whole; no temp file
is left behind; permissions are those of a plain `open`."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mega_lra.atomic_files import (
    atomic_path,
    atomic_write,
    torch_save,
    write_bytes,
    write_json,
    write_text,
)


def test_writes_create_folders_and_replace_the_old_content(tmp_path):
    path = tmp_path / "a" / "b" / "results.json"
    write_json(path, {"x": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"x": 1, "a": [1, 2]}, indent=2) + "\n"
    write_text(path, "über\n")
    assert path.read_text(encoding="utf-8") == "über\n"
    write_bytes(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert os.listdir(path.parent) == ["results.json"]  # no temp file left


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "metrics.csv"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="cut"), atomic_write(path) as fh:
        fh.write("new, half")
        raise RuntimeError("cut")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["metrics.csv"]


def test_the_file_mode_follows_the_umask_like_open(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "atomic.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    mode = (tmp_path / "atomic.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640


def test_torch_save_round_trips_a_checkpoint(tmp_path):
    state = {"global_step": 3, "state_dict": {"w": torch.arange(6.0).reshape(2, 3)}}
    torch_save(state, tmp_path / "last.ckpt")
    loaded = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert loaded["global_step"] == 3 and torch.equal(
        loaded["state_dict"]["w"], state["state_dict"]["w"]
    )


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode='a'"), atomic_write(tmp_path / "x", "a"):
        pass


def test_atomic_path_serves_writers_that_take_a_file_name(tmp_path):
    """safetensors' `save_file` writes by name: the target is replaced whole, or kept."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        save_file({"w": torch.arange(3.0)}, str(tmp))
    assert torch.equal(load_file(str(path))["w"], torch.arange(3.0))
    with pytest.raises(RuntimeError, match="cut"), atomic_path(path) as tmp:
        save_file({"w": torch.zeros(5)}, str(tmp))
        raise RuntimeError("cut")
    assert torch.equal(load_file(str(path))["w"], torch.arange(3.0))  # the old file, whole
    assert os.listdir(tmp_path) == ["model.safetensors"]
