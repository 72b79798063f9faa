"""Pathfinder / Path-X: text metadata, PNG decoding, empty-image drops, 80/10/10 split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.errors import DataError
from tasks.generators.pathfinder_images import PathfinderSpec, render, write_pathfinder
from tasks.pathfinder import PathfinderTask, split_lengths
from tasks.pathx import PathXTask
from tasks.prepare import load_task
from tests.tasks.conftest import paths_for
from tests.tasks.conftest import write_pathfinder as write_fixture

OFFICIAL = "lra_release/lra_release/pathfinder32/curv_contour_length_14"


def test_drop_empty_true_drops_blank_images_and_splits_the_rest(data_dir):
    write_fixture(data_dir / OFFICIAL, n=22, empty=2)
    built = PathfinderTask(num_proc=1, drop_empty=True).build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert rep["dropped"] == {"empty_image": 2}
    assert [rep["splits"][s]["rows"] for s in ("train", "val", "test")] == [16, 2, 2]
    total = {k: sum(rep["splits"][s]["labels"][k] for s in rep["splits"]) for k in "01"}
    assert total == {"0": 10, "1": 10}  # images 0 and 1 (labels 0, 1) were the empty ones
    kept = np.arange(2, 22)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(42)).numpy()
    assert built.manifest["splits"]["test"]["indices"] == sorted(kept[perm[18:]].tolist())
    assert len(built.dataset["train"][0]["inputs"]) == 1024


@pytest.mark.parametrize("name", ["pathfinder", "pathx", "pathfinder_small"])
def test_blank_images_are_kept_by_default(name):
    assert load_task(name).drop_empty is False
    assert PathfinderTask().drop_empty is False


def test_blank_images_keep_n_and_the_seed_42_split_of_all_images(data_dir):
    write_fixture(data_dir / OFFICIAL, n=30, empty=3)  # images 0, 1, 2 are blank
    built = load_task("pathfinder", ["task.num_proc=1"]).build(paths_for(data_dir), progress=False)
    m = built.manifest
    assert built.report()["dropped"] == {}
    assert m["notes"] == {"blank_images": 3}
    # S4/Mega: random_split(range(30), [24, 3, 3], generator=manual_seed(42))
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(42)).tolist()
    expected = {"train": perm[:24], "val": perm[24:27], "test": perm[27:]}
    for split, members in expected.items():
        assert m["splits"][split]["indices"] == sorted(members)
        assert m["splits"][split]["rows"] == len(members)
    for blank in (0, 1, 2):  # each blank image is in its split, as decoded (all zero)
        split = next(s for s, members in expected.items() if blank in members)
        row = m["splits"][split]["indices"].index(blank)
        assert set(built.dataset[split][row]["inputs"]) == {0}


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (200000, [160000, 20000, 20000]),  # the LRA release: nothing dropped
        (199999, [160001, 19999, 19999]),  # one image dropped shifts every size
        (30, [24, 3, 3]),
    ],
)
def test_split_lengths_are_s4s_arithmetic(n, sizes):
    assert split_lengths(n, [0.8, 0.1, 0.1]) == sizes


def test_split_is_identical_on_rebuild(data_dir):
    write_fixture(data_dir / "pathfinder" / "pathfinder32" / "curv_contour_length_14", n=30)
    a = PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)
    b = PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False, rebuild=True)
    for s in ("train", "val", "test"):
        assert a.manifest["splits"][s]["indices"] == b.manifest["splits"][s]["indices"]
    assert a.dataset["val"]["inputs"] == b.dataset["val"]["inputs"]


def test_metadata_may_be_a_real_npy_array(data_dir):
    folder = write_fixture(data_dir / OFFICIAL, n=10, per_folder=10)
    lines = (folder / "metadata" / "0.npy").read_text().split("\n")
    rows = np.array([ln.split() for ln in lines if ln])
    with open(folder / "metadata" / "0.npy", "wb") as f:
        np.save(f, rows)
    built = PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)
    assert sum(built.report()["splits"][s]["rows"] for s in ("train", "val", "test")) == 10


def test_corrupt_png_names_the_file_and_metadata_line(data_dir):
    folder = write_fixture(data_dir / OFFICIAL, n=20)
    (folder / "imgs" / "1" / "sample_3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError) as err:
        PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)
    msg = str(err.value)
    assert "imgs/1/sample_3.png: not a readable PNG" in msg
    assert f"{folder / 'metadata' / '1.npy'}:4" in msg
    assert not list((data_dir / ".cache").glob("*/*/manifest.json"))


def test_missing_image_and_wrong_size_are_named(data_dir):
    folder = write_fixture(data_dir / OFFICIAL, n=10)
    (folder / "imgs" / "0" / "sample_2.png").unlink()
    with pytest.raises(DataError, match=r"sample_2.png: image listed at .*0.npy:3 does not exist"):
        PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)
    write_fixture(folder, n=10, side=64)
    with pytest.raises(DataError, match=r"image is 64x64, expected 32x32"):
        PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_bad_metadata_line_names_file_and_line(data_dir):
    folder = write_fixture(data_dir / OFFICIAL, n=10)
    with open(folder / "metadata" / "0.npy", "a") as f:
        f.write("imgs/0 sample_9.png 9 yes 1.0\n")
    with pytest.raises(DataError, match=r"0.npy:11: label \(field 3\) 'yes' is not 0 or 1"):
        PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)
    (folder / "metadata" / "0.npy").write_text("imgs/0 sample_0.png\n")
    with pytest.raises(DataError, match=r"0.npy:1: expected >= 4 whitespace-separated fields"):
        PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_folder_without_metadata_is_an_error(data_dir):
    (data_dir / OFFICIAL / "imgs").mkdir(parents=True)
    with pytest.raises(DataError, match="expected both metadata/ and imgs/"):
        PathfinderTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_generator_is_seeded_balanced_and_in_the_release_layout(tmp_path):
    spec = PathfinderSpec(size=32)
    write_pathfinder(tmp_path / "a", 40, spec, seed=5, per_folder=20, num_proc=1, progress=False)
    write_pathfinder(tmp_path / "b", 40, spec, seed=5, per_folder=20, num_proc=2, progress=False)
    for k in ("0", "1"):
        meta_a = (tmp_path / "a" / "metadata" / f"{k}.npy").read_text()
        assert meta_a == (tmp_path / "b" / "metadata" / f"{k}.npy").read_text()
    png = (tmp_path / "a" / "imgs" / "1" / "sample_7.png").read_bytes()
    assert png == (tmp_path / "b" / "imgs" / "1" / "sample_7.png").read_bytes()
    line = (tmp_path / "a" / "metadata" / "1.npy").read_text().splitlines()[7].split()
    assert line[:2] == ["imgs/1", "sample_7.png"] and line[3] in ("0", "1")
    rng = np.random.default_rng(0)
    for label in (0, 1):
        img = render(rng, spec, label)
        assert img.shape == (32, 32) and img.dtype == np.uint8 and img.max() == 255


def test_generated_small_task_and_pathx_at_128(data_dir):
    small = PathfinderTask(name="pathfinder_small", source="generate", gen_samples=60, num_proc=1)
    rep = small.build(paths_for(data_dir), progress=False).report()
    assert rep["source"] == "generate"
    assert [rep["splits"][s]["rows"] for s in ("train", "val", "test")] == [48, 6, 6]
    px = PathXTask(source="generate", gen_samples=20, gen_per_folder=10, num_proc=1)
    built = px.build(paths_for(data_dir), progress=False)
    assert px.max_length == 16384 and len(built.dataset["train"][0]["inputs"]) == 16384
    assert list((data_dir / "generated").glob("pathx-*/pathfinder128/curv_contour_length_14"))


def test_pathx_requires_matching_length():
    with pytest.raises(DataError, match="task.max_length=16384"):
        PathXTask(max_length=1024)
