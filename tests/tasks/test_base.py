"""`tasks.base`: source resolution (auto never generates) and the data identity hash."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tasks.base import identity_manifest
from tasks.errors import DataError
from tasks.prepare import load_task
from tests.tasks.conftest import paths_for, write_listops, write_pathfinder

# The documented search order of each task (DESIGN.md "Raw data layouts", docs/data.md).
PF32 = "pathfinder32/curv_contour_length_14"
PF128 = "pathfinder128/curv_contour_length_14"
SEARCHED = {
    "listops": [
        "lra_release/lra_release/listops-1000",
        "lra_release/listops-1000",
        "listops",
        "listops-1000",
    ],
    "retrieval": ["lra_release/lra_release/tsv_data", "lra_release/tsv_data", "aan", "tsv_data"],
    "pathfinder": [
        f"lra_release/lra_release/{PF32}",
        f"lra_release/{PF32}",
        f"pathfinder/{PF32}",
        PF32,
    ],
    "pathx": [
        f"lra_release/lra_release/{PF128}",
        f"lra_release/{PF128}",
        f"pathfinder/{PF128}",
        PF128,
    ],
    "text": ["aclImdb", "imdb/aclImdb"],
    "image": ["cifar-10-batches-py", "cifar/cifar-10-batches-py"],
    "sc_raw": [
        "speech_commands",
        "SpeechCommands/speech_commands_v0.02",
        "speech_commands_v0.02",
    ],
}
LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
DOWNLOAD_URL = {
    "listops": LRA_URL,
    "retrieval": LRA_URL,
    "pathfinder": LRA_URL,
    "pathx": LRA_URL,
    "text": "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    "image": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "sc_raw": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
HUB = {"text": "stanfordnlp/imdb", "image": "uoft-cs/cifar10"}
GENERATOR = {"listops", "pathfinder", "pathx"}


@pytest.mark.parametrize("name", sorted(SEARCHED))
def test_auto_without_files_is_one_error_with_every_path_and_way_out(name, data_dir):
    task = load_task(name, ["task.num_proc=1"])
    assert task.source == "auto"  # the shipped default
    with pytest.raises(DataError) as err:
        task.build(paths_for(data_dir), progress=False)
    msg = str(err.value)
    assert msg.startswith(f"task {name!r}: no raw data found under paths.data_dir={data_dir}")
    positions = [msg.index(f"  - {data_dir / rel}\n") for rel in SEARCHED[name]]
    assert positions == sorted(positions)  # every searched path, in search order
    assert f"download=true: python -m tasks.prepare task={name} download=true" in msg
    assert DOWNLOAD_URL[name] in msg
    assert ("task.source=hub" in msg) == (name in HUB)
    if name in HUB:
        assert HUB[name] in msg
    assert ("task.source=generate" in msg) == (name in GENERATOR)
    assert not (data_dir / "generated").exists()  # nothing generated as a fallback
    assert not (data_dir / ".cache").exists()


@pytest.mark.parametrize("name", ["listops_small", "pathfinder_small"])
def test_demo_tasks_ask_for_generated_data(name):
    assert load_task(name).source == "generate"


def _listops(data_dir, where, **kw):
    write_listops(data_dir / where)
    return load_task("listops", ["task.num_proc=1", *kw.get("overrides", [])]).build(
        paths_for(data_dir), progress=False
    )


def test_same_data_elsewhere_has_the_same_manifest_hash(tmp_path):
    a = _listops(tmp_path / "a", "listops")
    b_dir = tmp_path / "b"
    write_listops(b_dir / "lra_release" / "lra_release" / "listops-1000")
    for f in (b_dir / "lra_release" / "lra_release" / "listops-1000").iterdir():
        os.utime(f, ns=(10**9, 10**9))  # other mtimes: another cache key
    b = load_task("listops", ["task.num_proc=1"]).build(paths_for(b_dir), progress=False)
    assert a.manifest["cache_key"] != b.manifest["cache_key"]
    assert a.manifest["source"]["root"] != b.manifest["source"]["root"]
    assert a.manifest_sha256 == b.manifest_sha256
    assert len(a.manifest_sha256) == 64 and a.source == b.source == "files"
    rebuilt = load_task("listops", ["task.num_proc=1"]).build(
        paths_for(tmp_path / "a"), progress=False, rebuild=True
    )
    assert rebuilt.manifest["created_unix"] != a.manifest["created_unix"]
    assert rebuilt.manifest_sha256 == a.manifest_sha256
    ident = json.dumps(identity_manifest(b.manifest))
    assert str(tmp_path) not in ident  # no absolute path left in what is hashed


def test_changed_content_or_parameter_changes_the_manifest_hash(tmp_path):
    base = _listops(tmp_path / "a", "listops")
    edited = tmp_path / "b" / "listops"
    write_listops(edited)
    lines = (edited / "basic_test.tsv").read_text().splitlines()
    lines[1] = lines[1].rsplit("\t", 1)[0] + "\t0"  # one label changed
    (edited / "basic_test.tsv").write_text("\n".join(lines) + "\n")
    changed = load_task("listops", ["task.num_proc=1"]).build(
        paths_for(tmp_path / "b"), progress=False
    )
    assert changed.manifest_sha256 != base.manifest_sha256
    shorter = load_task("listops", ["task.num_proc=1", "task.max_length=4"]).build(
        paths_for(tmp_path / "a"), progress=False
    )
    assert shorter.manifest_sha256 != base.manifest_sha256


def test_per_sample_folders_are_identified_by_content(tmp_path):
    folder = write_pathfinder(tmp_path / "a" / "pathfinder" / PF32, n=20)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # new mtimes, other folder
    task = load_task("pathfinder", ["task.num_proc=1"])
    a = task.build(paths_for(tmp_path / "a"), progress=False)
    b = task.build(paths_for(tmp_path / "b"), progress=False)
    assert a.manifest_sha256 == b.manifest_sha256
    img = tmp_path / "b" / "pathfinder" / PF32 / "imgs" / "1" / "sample_4.png"
    pixels = np.asarray(Image.open(img)).copy()
    pixels[0, 0] ^= 1  # one pixel of one image
    Image.fromarray(pixels, mode="L").save(img)
    c = task.build(paths_for(tmp_path / "b"), progress=False)
    assert not c.cached and c.manifest_sha256 != a.manifest_sha256
    assert folder.is_dir()


def test_generated_data_has_one_hash_wherever_it_is_generated(tmp_path):
    overrides = ["task.num_proc=1", "task.gen_rows={train: 30, val: 10, test: 10}"]
    a = load_task("listops_small", overrides).build(paths_for(tmp_path / "a"), progress=False)
    b = load_task("listops_small", overrides).build(paths_for(tmp_path / "b"), progress=False)
    assert a.source == "generate"
    assert a.manifest_sha256 == b.manifest_sha256
