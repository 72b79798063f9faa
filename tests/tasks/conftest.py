"""Fixture builders: tiny datasets in each official raw layout, written into tmp dirs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tasks.sc_raw import SC10_WORDS

LISTOPS_ROWS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( [MIN 4 ) ( ( ( [SM 3 ) 5 ) ] ) ) 7 ) ] )", 4),
    ("( ( ( [MED 1 ) 3 ) ] )", 2),
    ("( ( ( ( [SM 9 ) 8 ) 7 ) ] )", 4),
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def paths_for(data_dir: Path) -> dict[str, str]:
    return {"data_dir": str(data_dir), "cache_dir": str(data_dir / ".cache")}


def write_listops(folder: Path, rows=LISTOPS_ROWS, per_split: dict[str, int] | None = None) -> Path:
    """``folder/basic_{train,val,test}.tsv`` with the official header."""
    per_split = per_split or {"train": 4, "val": 2, "test": 2}
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in per_split.items():
        lines = ["Source\tTarget"] + [f"{s}\t{v}" for s, v in (rows * n)[:n]]
        (folder / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_aan(folder: Path, n: dict[str, int] | None = None) -> Path:
    """``folder/new_aan_pairs.{train,eval,test}.tsv``: 5 columns, no header."""
    n = n or {"train": 6, "eval": 2, "test": 2}
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in n.items():
        lines = [
            f"{float(i % 2)}\tid{i}a\tid{i}b\tpaper {split} {i} text one\tsecond doc {i}"
            for i in range(count)
        ]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_pathfinder(
    folder: Path, n: int = 20, side: int = 32, empty: int = 0, per_folder: int = 10
) -> Path:
    """``folder/{imgs/<k>/sample_<i>.png, metadata/<k>.npy}`` (text metadata, label field 3)."""
    rng = np.random.default_rng(0)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    lines: dict[int, list[str]] = {}
    for idx in range(n):
        k, i = divmod(idx, per_folder)
        label = idx % 2
        img_dir = folder / "imgs" / str(k)
        img_dir.mkdir(parents=True, exist_ok=True)
        if idx < empty:
            pixels = np.zeros((side, side), dtype=np.uint8)
        else:
            pixels = rng.integers(0, 256, (side, side), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(img_dir / f"sample_{i}.png")
        lines.setdefault(k, []).append(f"imgs/{k} sample_{i}.png {i} {label} 1.0 14 2 2 0.5 1 1")
    for k, ls in lines.items():
        (folder / "metadata" / f"{k}.npy").write_text("\n".join(ls) + "\n")
    return folder


def write_cifar(folder: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """``folder/{data_batch_1..5,test_batch}``: protocol-2 pickles with bytes keys."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {
            b"batch_label": name.encode(),
            b"labels": [int(x) for x in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return folder


def write_imdb(root: Path, per_class: int = 3) -> Path:
    """``root/aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt``."""
    for split in ("train", "test"):
        for lab in ("neg", "pos"):
            d = root / "aclImdb" / split / lab
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (d / f"{i}_{1 if lab == 'neg' else 9}.txt").write_text(f"{lab} review {split} {i}")
    return root / "aclImdb"


def write_speech(folder: Path, per_word: int = 10, short: int = 0, seed: int = 0) -> Path:
    """``folder/<word>/*.wav`` 16 kHz PCM-16 clips; the first ``short`` of each word are short."""
    rng = np.random.default_rng(seed)
    for w in SC10_WORDS:
        d = folder / w
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_word):
            n = 8000 if i < short else 16000
            x = np.clip(rng.normal(0, 0.1, n), -1, 1).astype(np.float32)
            sf.write(d / f"{i:08x}_nohash_0.wav", x, 16000, subtype="PCM_16")
    return folder


def write_speech35(folder: Path, per_word: int = 3, seed: int = 0) -> Path:
    """``folder/<word>/*.wav`` for all 35 words (clip 0 of each word short) plus the official
    ``validation_list.txt`` (clip 1 of each word) and ``testing_list.txt`` (clip 2)."""
    from tasks.sc_raw import SC35_WORDS

    rng = np.random.default_rng(seed)
    val, test = [], []
    for w in SC35_WORDS:
        d = folder / w
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_word):
            n = 12000 if i == 0 else 16000
            x = np.clip(rng.normal(0, 0.1, n), -1, 1).astype(np.float32)
            name = f"{i:08x}_nohash_0.wav"
            sf.write(d / name, x, 16000, subtype="PCM_16")
            (val if i == 1 else test if i == 2 else []).append(f"{w}/{name}")
    (folder / "validation_list.txt").write_text("\n".join(val) + "\n")
    (folder / "testing_list.txt").write_text("\n".join(test) + "\n")
    return folder
