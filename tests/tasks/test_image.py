"""Image (grayscale CIFAR-10): pickles read safely, PIL grayscale, seeded 90/10 split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.collate import Collator
from tasks.errors import DataError
from tasks.image import ImageTask, read_cifar_batch
from tests.tasks.conftest import paths_for, write_cifar


def test_counts_split_and_grayscale_match_pil(data_dir):
    folder = write_cifar(data_dir / "cifar-10-batches-py", per_batch=20)
    built = ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert [rep["splits"][s]["rows"] for s in ("train", "val", "test")] == [90, 10, 20]
    data, labels = read_cifar_batch(folder / "test_batch")
    row = built.dataset["test"][3]
    rgb = data[3].reshape(3, 32, 32).transpose(1, 2, 0)
    expected = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L")).reshape(-1)
    assert row["inputs"] == expected.tolist()
    assert row["labels"] == labels[3]


def test_split_is_torch_randperm_seed_42_and_identical_across_builds(data_dir):
    write_cifar(data_dir / "cifar-10-batches-py", per_batch=20)
    a = ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(42)).numpy()
    assert a.manifest["splits"]["val"]["indices"] == sorted(perm[90:].tolist())
    assert a.manifest["splits"]["val"]["seed"] == 42
    b = ImageTask(num_proc=1).build(paths_for(data_dir), progress=False, rebuild=True)
    assert (
        b.manifest["splits"]["train"]["indices_sha256"]
        == (a.manifest["splits"]["train"]["indices_sha256"])
    )
    assert b.dataset["val"]["inputs"] == a.dataset["val"]["inputs"]


def test_normalisation_and_token_mode_share_one_cache(data_dir):
    write_cifar(data_dir / "cifar-10-batches-py", per_batch=20)
    pix = ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)
    task = ImageTask(num_proc=1, input_kind="tokens")
    assert task.vocab_size == 259
    tok = task.build(paths_for(data_dir), progress=False)
    assert tok.cached and tok.manifest_path == pix.manifest_path
    raw = np.asarray(pix.dataset["test"][0]["inputs"])
    rows = [pix.dataset["test"][0]]
    b = Collator.for_task(ImageTask(), pix.manifest, 0)(rows)
    assert torch.allclose(
        b["inputs"][0], torch.tensor((raw / 255 - 0.48) / 0.24).float(), atol=1e-5
    )
    t = Collator.for_task(task, tok.manifest, 0)(rows)
    assert t["input_ids"][0].tolist() == (raw + 3).tolist()


def test_corrupt_pickle_names_the_file(data_dir):
    folder = write_cifar(data_dir / "cifar-10-batches-py")
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(X")  # truncated pickle
    with pytest.raises(DataError, match=r"data_batch_3: not a readable CIFAR-10 batch pickle"):
        ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_pickle_that_would_run_code_is_refused(data_dir):
    folder = write_cifar(data_dir / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load global (__builtin__|builtins).print"):
        ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_wrong_shape_and_missing_batch_are_named(data_dir):
    folder = write_cifar(data_dir / "cifar-10-batches-py")
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_2: b'data' must be an \(N, 3072\)"):
        ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="missing data_batch_2"):
        ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_settings_are_validated():
    with pytest.raises(DataError, match="task.max_length"):
        ImageTask(max_length=1000)
    with pytest.raises(DataError, match="task.vocab_size"):
        ImageTask(vocab_size=259)


def test_mean_std_overrides_apply_even_when_the_cache_is_reused(data_dir):
    write_cifar(data_dir / "cifar-10-batches-py", per_batch=20)
    first = ImageTask(num_proc=1).build(paths_for(data_dir), progress=False)
    task = ImageTask(num_proc=1, mean=0.5, std=0.25)
    again = task.build(paths_for(data_dir), progress=False)
    assert again.cached  # mean/std are not in the cache key ...
    assert again.manifest["normalization"] == {"scale": 1 / 255, "mean": 0.5, "std": 0.25}
    row = again.dataset["train"][0]
    batch = Collator.for_task(task, again.manifest, 0)([row])
    expected = (np.asarray(row["inputs"], np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(batch["inputs"][0].numpy(), expected, atol=1e-6)  # ... but they apply
    assert again.manifest_sha256 != first.manifest_sha256  # and they are part of the identity
