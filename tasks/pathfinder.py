"""Pathfinder (LRA): are the two markers joined by one dashed path? 32x32 pixels, 2 classes.

Raw layout (the LRA release, one difficulty; the community standard is the hard one)::

    pathfinder32/curv_contour_length_14/imgs/<k>/sample_<n>.png
    pathfinder32/curv_contour_length_14/metadata/<k>.npy

searched under ``lra_release/lra_release/``, ``lra_release/``, the S4 suite's ``pathfinder/`` and
``data_dir``. The metadata files are TEXT despite the name (a real ``.npy`` array of strings is
also accepted): one whitespace-separated line per image, field 0 the folder (``imgs/<k>``),
field 1 the file name, field 3 the label. Files are read in numeric order of ``<k>``.

Without files, ``source=auto`` raises one error listing the paths searched and the ways out;
only ``source=generate`` runs `tasks.generators.pathfinder_images` (into
``<data_dir>/generated/<name>-<hash>/pathfinder<res>/curv_contour_length_14/``).

Images are decoded with PIL ``convert("L")`` and cached as uint8. Every readable image is kept,
blank ones included (``drop_empty: false``, the default): S4/Mega's pipeline drops nothing from
``curv_contour_length_14`` (its one blacklisted blank file is in ``curv_baseline``), and dropping
even one image changes n, so the seeded permutation reshuffles the whole split and a released
checkpoint's test images would land in train. The count of blank images is recorded in the
manifest (``notes.blank_images``); ``drop_empty: true`` drops them (counted as
``dropped.empty_image``; neither S4 nor LRA did this: LRA's builder skips only zero-byte files).
An unreadable (e.g. zero-byte), missing or wrongly sized image is an error naming the file and
its metadata line.

The n images are split by `split_lengths` (val = ``int(0.1 n)``, test = ``int(0.1 n)``, train
the rest: 160,000 / 20,000 / 20,000 for 200,000) over ``torch.randperm(n, manual_seed(42))``
(first part train, next val, rest test), as S4/Mega's ``random_split``. The collator normalises
with ``(x / 255 - 0.5) / 0.5`` (Mega), or maps pixel v to token ``3 + v`` with
``input_kind=tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Features, List, Value
from PIL import Image as PILImage

from tasks.base import Processed, RawSource, Task, indices_info, lra_roots, random_split_indices
from tasks.errors import DataError, data_error
from tasks.generators.pathfinder_images import PathfinderSpec, write_pathfinder
from tasks.image import check_signal_fields
from tasks.storage import batched_map, column_numpy, write_arrow
from tasks.tokenizers import PAD_ID

POOL_FEATURES = Features(
    {"path": Value("string"), "where": Value("string"), "labels": Value("int64")}
)


def metadata_files(meta_dir: Path) -> list[Path]:
    """``metadata/*.npy`` in numeric order of the stem (non-numeric stems last, by name)."""

    def key(p: Path) -> tuple[int, int, str]:
        return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.name)

    return sorted((p for p in meta_dir.iterdir() if p.suffix == ".npy"), key=key)


def _metadata_lines(path: Path) -> list[str]:
    blob = path.read_bytes()
    if blob.startswith(b"\x93NUMPY"):  # a real .npy (e.g. written by the snakes2 generator)
        import io

        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except ValueError as e:
            raise data_error(path, f"unreadable .npy metadata ({e})", "re-extract it") from e
        arr = np.atleast_2d(arr)
        return [" ".join(str(x) for x in row) for row in arr]
    try:
        return blob.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise data_error(path, f"metadata is not text ({e})", "re-extract the folder") from e


def read_metadata(root: Path, files: list[Path]) -> Iterator[dict[str, list]]:
    """Yield ``{"path", "where", "labels"}`` batches for every image listed in ``files``."""
    fix = "the metadata file is truncated or edited; re-extract this pathfinder folder"
    for meta in files:
        batch: dict[str, list] = {"path": [], "where": [], "labels": []}
        for lineno, line in enumerate(_metadata_lines(meta), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4:
                raise data_error(
                    meta,
                    f"expected >= 4 whitespace-separated fields (folder, file, index, label), "
                    f"found {len(parts)}",
                    fix,
                    line=lineno,
                )
            if parts[3] not in ("0", "1"):
                raise data_error(
                    meta, f"label (field 3) {parts[3]!r} is not 0 or 1", fix, line=lineno
                )
            batch["path"].append(str(root / parts[0] / parts[1]))
            batch["where"].append(f"{meta}:{lineno}")
            batch["labels"].append(int(parts[3]))
        if batch["path"]:
            yield batch


def split_lengths(n: int, fractions: list[float]) -> list[int]:
    """[train, val, test] sizes: val and test are ``int(fraction * n)``, train takes the rest.

    The arithmetic of S4's Pathfinder loader (and so Mega's released splits).
    """
    n_val = int(fractions[1] * n)
    n_test = int(fractions[2] * n)
    return [n - n_val - n_test, n_val, n_test]


def _decode_batch(batch: dict[str, list], side: int) -> dict[str, Any]:
    n = len(batch["path"])
    pixels = np.zeros((n, side * side), dtype=np.uint8)
    empty = np.zeros(n, dtype=bool)
    for i, (path, where) in enumerate(zip(batch["path"], batch["where"], strict=True)):
        try:
            with PILImage.open(path) as img:
                gray = img.convert("L")
        except FileNotFoundError:
            raise DataError(
                f"{path}: image listed at {where} does not exist. Fix: re-extract the "
                "pathfinder folder (imgs/ and metadata/ must come from the same archive)"
            ) from None
        except Exception as e:  # PIL raises several types for corrupt files
            raise DataError(
                f"{path}: not a readable PNG ({type(e).__name__}: {e}); listed at {where}. "
                "Fix: re-extract the pathfinder folder or delete this image's metadata line"
            ) from None
        if gray.size != (side, side):
            raise DataError(
                f"{path}: image is {gray.size[0]}x{gray.size[1]}, expected {side}x{side} "
                f"(listed at {where}). Fix: point the task at the pathfinder{side} folder"
            )
        arr = np.asarray(gray, dtype=np.uint8).reshape(-1)
        pixels[i] = arr
        empty[i] = arr.min() == arr.max()
    return {"inputs": pixels, "labels": batch["labels"], "empty": empty}


@dataclass
class PathfinderTask(Task):
    """Pathfinder at ``resolution`` px (Path-X is the same task at 128 px)."""

    name: str = "pathfinder"
    num_classes: int = 2
    input_kind: str = "pixels"
    max_length: int = 1024
    vocab_size: int | None = None
    pad_id: int = PAD_ID
    head: str = "pooled"
    resolution: int = 32
    difficulty: str = "curv_contour_length_14"
    mean: float = 0.5
    std: float = 0.5
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 42
    drop_empty: bool = False
    gen_samples: int = 200000
    gen_per_folder: int = 1000

    NUM_CLASSES: ClassVar[int] = 2
    ALLOWED_KINDS: ClassVar[tuple[str, ...]] = ("pixels", "tokens")
    HAS_GENERATOR: ClassVar[bool] = True
    SPT_MASK_RATE: ClassVar[float | None] = 0.50
    SPT_PIXEL_LOSS: ClassVar[str] = "ce"
    NOT_CACHED: ClassVar[tuple[str, ...]] = (
        "num_proc",
        "source",
        "mean",
        "std",
        "input_kind",
        "vocab_size",
    )

    def __post_init__(self) -> None:
        self.split_fractions = [float(x) for x in self.split_fractions]
        super().__post_init__()
        check_signal_fields(self, self.resolution**2)
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise data_error(
                "task.split_fractions",
                f"{self.split_fractions} must be 3 fractions summing to 1",
                "use e.g. [0.8,0.1,0.1]",
            )
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.difficulty):
            raise data_error(
                "task.difficulty",
                f"{self.difficulty!r} is not a folder name",
                "e.g. curv_contour_length_14, curv_contour_length_9 or curv_baseline",
            )

    def folder(self) -> str:
        """Path of this difficulty inside the release, e.g. ``pathfinder32/curv_contour_...``."""
        return f"pathfinder{self.resolution}/{self.difficulty}"

    def search_roots(self, data_dir: Path) -> list[Path]:
        return lra_roots(data_dir, self.folder(), f"pathfinder/{self.folder()}")

    def files_at(self, root: Path) -> RawSource | None:
        if not root.is_dir():
            return None
        meta, imgs = root / "metadata", root / "imgs"
        if not meta.is_dir() or not imgs.is_dir():
            raise data_error(
                root,
                "expected both metadata/ and imgs/ in this Pathfinder folder",
                "re-extract it from lra_release.gz",
            )
        files = metadata_files(meta)
        if not files:
            raise data_error(meta, "no metadata/*.npy files", "re-extract it")
        return RawSource(kind="files", root=root, files=files, dirs=[imgs])

    def how_to_get(self) -> str:
        return (
            "download https://storage.googleapis.com/long-range-arena/lra_release.gz (8.2 GB) and "
            "extract it into paths.data_dir (or move the pathfinder folders to "
            "<data_dir>/pathfinder/ as S4 does)"
        )

    def runtime_normalization(self) -> dict[str, float]:
        return {"scale": 1 / 255, "mean": self.mean, "std": self.std}

    def generator_params(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "samples": self.gen_samples,
            "per_folder": self.gen_per_folder,
            "spec": PathfinderSpec(size=self.resolution).__dict__,
        }

    def generate(self, root: Path, progress: bool) -> None:
        write_pathfinder(
            root / self.folder(),
            self.gen_samples,
            PathfinderSpec(size=self.resolution),
            self.seed,
            per_folder=self.gen_per_folder,
            num_proc=self.num_proc,
            progress=progress,
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        pool = write_arrow(work / "pool.arrow", POOL_FEATURES, read_metadata(raw.root, raw.files))
        if len(pool) == 0:
            raise data_error(raw.root / "metadata", "metadata lists no images", "re-extract it")
        decoded = batched_map(
            pool,
            _decode_batch,
            features=Features(
                {
                    "inputs": List(Value("uint8"), length=self.max_length),
                    "labels": Value("int64"),
                    "empty": Value("bool"),
                }
            ),
            out_file=work / "decoded.arrow",
            num_proc=self.num_proc,
            desc=f"decode Pathfinder{self.resolution}",
            fn_kwargs={"side": self.resolution},
        )
        empty = column_numpy(decoded, "empty")
        dropped = {}
        if self.drop_empty:
            kept = np.flatnonzero(~empty)
            dropped["empty_image"] = int(empty.sum())
            origin = f"metadata lines in order ({len(decoded)} images), blank images removed"
        else:
            kept = np.arange(len(decoded))
            origin = f"metadata lines in order ({len(decoded)} images, all kept)"
        lengths = split_lengths(len(kept), self.split_fractions)
        parts = random_split_indices(len(kept), lengths, self.seed)
        decoded = decoded.remove_columns("empty")
        splits, info = {}, {}
        pct = "/".join(f"{round(100 * f)}" for f in self.split_fractions)
        for s, part in zip(("train", "val", "test"), parts, strict=True):
            rows = np.sort(kept[part])
            splits[s] = decoded.select(rows)
            info[s] = indices_info(rows, self.seed, f"random_split {pct} of {origin}")
        return Processed(
            splits=splits,
            split_info=info,
            dropped=dropped,
            normalization=self.runtime_normalization(),
            notes={"blank_images": int(empty.sum())},
        )
