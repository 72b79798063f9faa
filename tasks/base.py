"""The task object every task module exposes, and the cached build it runs.

A task is a dataclass: its fields are exactly the keys of its ``conf/task/<name>.yaml`` node
(``_target_`` points at the class), so Hydra builds it and training configs can interpolate
``${task.max_length}``, ``${task.vocab_size}``, ``${task.num_classes}``.

``task.build(paths)`` returns a `Built`: the ``datasets.DatasetDict`` (train/val/test) and its
manifest. The build:

1. resolves ``source``: ``auto`` and ``files`` read the files in the official layout and, when
   none are found, raise ONE `DataError` listing every path searched and every way out
   (``download=true``, ``task.source=hub``, ``task.source=generate`` where each exists).
   Generated data is used only with ``source=generate`` (the ``*_small`` demo tasks set it);
   ``auto`` never falls back to it;
2. hashes every preprocessing field plus the source files' fingerprints (name, size, mtime)
   into a cache key; ``<cache_dir>/<name>/<key>/`` holding ``manifest.json`` is reused as is;
3. otherwise processes into a private ``.tmp-*`` folder with ``datasets.map(batched=True)`` and
   renames it into place only when complete, so an interrupted run never leaves a cache that a
   later run trusts.

Cached columns: ``input_ids`` (int16 list) or ``input_ids_1``/``input_ids_2`` (retrieval) for
token tasks, ``inputs`` (uint8 pixels / int16 audio, fixed length) for signal tasks, and
``labels`` (int64). Pixel/audio normalisation happens in `tasks.collate.Collator`, with the
scale/mean/std recorded in the manifest under ``normalization``.

`Built.manifest_sha256` identifies the data: the SHA-256 of `identity_manifest` (the manifest
without creation time, pid, build seconds, library version, cache key and absolute paths; with
source-file hashes, per-split content hashes, parameters, split indices, counts and drops).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
from datasets import Dataset, DatasetDict

from tasks.errors import DataError, data_error
from tasks.storage import (
    cleanup_on_error,
    column_numpy,
    dataset_digest,
    listing_digest,
    new_tmp_dir,
    publish_dir,
    remove_stale_tmp,
    sha256_file,
    stable_hash,
    stat_fingerprint,
)

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "files", "hub", "generate")
INPUT_KINDS = ("tokens", "pixels", "audio")
HEADS = ("pooled", "retrieval")
# Bump when the processing code changes what a cache holds.
# 2: per-split content hashes in the manifest; Pathfinder keeps blank images; SC-Raw S4 split.
CACHE_VERSION = 2
# Manifest keys that differ between two builds of the same data (time, process, machine).
VOLATILE_KEYS = ("cache_key", "created_unix", "pid", "build_seconds", "datasets_version")


@dataclass
class Paths:
    """Where raw data lives and where prepared caches go."""

    data_dir: Path
    cache_dir: Path

    @classmethod
    def coerce(cls, paths: Paths | Mapping[str, Any]) -> Paths:
        """Accept a `Paths`, a dict or a Hydra ``paths`` node (extra keys are ignored)."""
        if isinstance(paths, Paths):
            return paths
        data_dir = Path(str(paths["data_dir"])).expanduser()
        cache = paths.get("cache_dir") or (data_dir / ".cache")
        return cls(data_dir=data_dir, cache_dir=Path(str(cache)).expanduser())


@dataclass
class RawSource:
    """Resolved raw input of one build."""

    kind: str  # "files" | "hub" | "generate"
    root: Path | None = None  # folder in the official layout (files / generate)
    files: list[Path] = field(default_factory=list)  # hashed into the manifest
    dirs: list[Path] = field(default_factory=list)  # per-sample folders: listing digest
    hub_id: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """Cheap identity for the cache key: stats, not contents."""
        return {
            "kind": self.kind,
            "hub_id": self.hub_id,
            "files": [stat_fingerprint(p) for p in self.files],
            "dirs": [listing_digest(d)["listing_sha256"] for d in self.dirs],
        }

    def describe(self) -> dict[str, Any]:
        """Source block of the manifest: content hashes of the files, listings of folders."""
        return {
            "kind": self.kind,
            "root": str(self.root) if self.root else None,
            "hub_id": self.hub_id,
            "files": [
                {"path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}
                for p in self.files
            ],
            "dirs": [{"path": str(d), **listing_digest(d)} for d in self.dirs],
        }


@dataclass
class Processed:
    """What a task's ``process`` returns, before it is saved."""

    splits: dict[str, Dataset]
    split_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    normalization: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # facts about the data worth keeping


def _relative(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` when it lies under it, else its last component."""
    if root:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).name


def identity_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest without what differs between two builds of the same data.

    Dropped: `VOLATILE_KEYS` (creation time, pid, build seconds, ``datasets`` version, the cache
    key, which holds file mtimes), the source root, absolute paths (files and folders are named
    relative to the root) and folder listing digests (they hold mtimes). Kept: task, parameters,
    source kind and hub id, each source file's relative name, size and SHA-256, per split the
    rows, label counts, origin, seed, indices and content SHA-256, drops, notes, normalisation.
    """
    out = {k: v for k, v in manifest.items() if k not in VOLATILE_KEYS}
    src = dict(out.get("source") or {})
    root = src.pop("root", None)
    src["files"] = [
        {"name": _relative(f["path"], root), "size": f["size"], "sha256": f["sha256"]}
        for f in src.get("files", [])
    ]
    src["dirs"] = [_relative(d["path"], root) for d in src.get("dirs", [])]
    out["source"] = src
    return out


@dataclass
class Built:
    """A prepared task: the dataset, its manifest and where the manifest lives."""

    dataset: DatasetDict
    manifest: dict[str, Any]
    manifest_path: Path
    cached: bool

    @property
    def source(self) -> str:
        """Where the data came from: ``files``, ``hub`` or ``generate``."""
        return self.manifest["source"]["kind"]

    @property
    def manifest_sha256(self) -> str:
        """Identity of the data: SHA-256 of the canonical JSON of `identity_manifest`.

        Equal for two builds of the same data (other folders, cache dirs, machines, times);
        different when the data's content, a preprocessing parameter or the split changes.
        """
        return stable_hash(identity_manifest(self.manifest))

    def report(self) -> dict[str, Any]:
        """The one-line JSON summary `tasks.prepare` prints."""
        m = self.manifest
        return {
            "task": m["task"],
            "source": m["source"]["kind"],
            "splits": {
                s: {"rows": m["splits"][s]["rows"], "labels": m["splits"][s]["labels"]}
                for s in SPLITS
            },
            "dropped": m["dropped"],
            "manifest": str(self.manifest_path),
        }


@dataclass
class Task:
    """Base of every task; subclasses set defaults and implement the hooks below."""

    name: str = ""
    label: str = ""  # how tables and plots name the task
    benchmark: str = ""  # lra | speech | demo: which table the task belongs to
    column: int = 0  # its column in that benchmark's table (the paper's order)
    num_classes: int = 2
    input_kind: str = "tokens"
    max_length: int = 0
    vocab_size: int | None = None
    pad_id: int = 0
    head: str = "pooled"
    source: str = "auto"
    num_proc: int = 2
    # the share of the training split used (a nested subset, `tasks.datamodule.train_subset`);
    # applied when loading, so it never changes the cache
    train_fraction: float = 1.0

    # Class-level facts (not config): allowed values, checked in __post_init__.
    NUM_CLASSES: ClassVar[int] = 0
    ALLOWED_KINDS: ClassVar[tuple[str, ...]] = ("tokens",)
    HEAD: ClassVar[str] = "pooled"
    HAS_GENERATOR: ClassVar[bool] = False
    HUB_ID: ClassVar[str | None] = None
    # Fields that do not change the cached data (kept out of the cache key).
    NOT_CACHED: ClassVar[tuple[str, ...]] = ("num_proc", "source")
    # Fields that only name the task (tables, plots): never part of the cache key.
    DESCRIPTIVE: ClassVar[tuple[str, ...]] = ("label", "benchmark", "column")
    # Fields applied after the cache is loaded: never part of the cache key.
    AFTER_CACHE: ClassVar[tuple[str, ...]] = ("train_fraction",)
    # Self-pretraining defaults (mega_lra.pretraining.objectives): the masking rate of the
    # masked objective, and the loss of pixel/audio inputs (l1: the normalised value; ce: the
    # 256 grey levels).
    SPT_MASK_RATE: ClassVar[float | None] = None
    SPT_PIXEL_LOSS: ClassVar[str] = "l1"

    def __post_init__(self) -> None:
        def bad(key: str, value: Any, expected: str) -> DataError:
            return DataError(
                f"task {self.name!r}: task.{key}={value!r} is not valid; expected {expected}. "
                f"Fix: override task.{key} on the command line or in conf/task/{self.name}.yaml"
            )

        if self.source not in SOURCES:
            raise bad("source", self.source, " | ".join(SOURCES))
        if self.input_kind not in self.ALLOWED_KINDS:
            raise bad("input_kind", self.input_kind, " | ".join(self.ALLOWED_KINDS))
        if self.NUM_CLASSES and self.num_classes != self.NUM_CLASSES:
            raise bad("num_classes", self.num_classes, str(self.NUM_CLASSES))
        if self.head != self.HEAD:
            raise bad("head", self.head, repr(self.HEAD))
        if self.max_length <= 1:
            raise bad("max_length", self.max_length, "an integer > 1")
        if self.source == "generate" and not self.HAS_GENERATOR:
            raise bad("source", self.source, "auto | files" + (" | hub" if self.HUB_ID else ""))
        if self.source == "hub" and not self.HUB_ID:
            raise bad("source", self.source, "auto | files" + (" | generate" * self.HAS_GENERATOR))
        if self.num_proc < 1:
            raise bad("num_proc", self.num_proc, "an integer >= 1")
        if isinstance(self.train_fraction, bool) or not 0 < self.train_fraction <= 1:
            raise bad("train_fraction", self.train_fraction, "a number in (0, 1]")

    # ---- properties others read -------------------------------------------------------
    @property
    def val_is_test(self) -> bool:
        """True when the val split is the test split (LRA Text's convention)."""
        return False

    # ---- hooks for subclasses -----------------------------------------------------------
    def search_roots(self, data_dir: Path) -> list[Path]:
        """Candidate folders, in search order, that may hold the official layout."""
        raise NotImplementedError

    def files_at(self, root: Path) -> RawSource | None:
        """A `RawSource` when ``root`` holds this task's files, else None."""
        raise NotImplementedError

    def how_to_get(self) -> str:
        """One sentence: where to download the data by hand and where to extract it."""
        raise NotImplementedError

    def runtime_normalization(self) -> dict[str, Any] | None:
        """Collator scaling set by task fields (not learned from the data), or None.

        Tasks whose mean/std are plain settings (kept out of the cache key) return them here, so
        an override such as ``task.mean=0.5`` applies even when the cache is reused.
        """
        return None

    def ways_out(self) -> list[str]:
        """Every way to get this task's data, for the not-found error."""
        from tasks.download import archive_for

        ways = []
        arc = archive_for(self.name)
        if arc is not None:
            ways.append(
                f"download=true: python -m tasks.prepare task={self.name} download=true fetches "
                f"{arc.url} and extracts it into paths.data_dir"
            )
        ways.append(f"by hand: {self.how_to_get()}")
        if self.HUB_ID:
            ways.append(
                f"task.source=hub: load {self.HUB_ID} from the Hugging Face hub (or its cache)"
            )
        if self.HAS_GENERATOR:
            ways.append(
                "task.source=generate: the seeded built-in generator (generated data, never "
                "comparable with the paper's numbers)"
            )
        ways.append("paths.data_dir=DIR: point at the folder that already holds the data")
        return ways

    def generate(self, root: Path, progress: bool) -> None:
        """Write generated raw data in the official layout under ``root``."""
        raise NotImplementedError

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        """Read ``raw`` into train/val/test datasets (files in ``work``)."""
        raise NotImplementedError

    # ---- shared machinery ----------------------------------------------------------------
    def cache_params(self) -> dict[str, Any]:
        """Every field that changes the cached data, plus the class and cache version."""
        skip = (*self.NOT_CACHED, *self.DESCRIPTIVE, *self.AFTER_CACHE)
        params = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        params["class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        params["cache_version"] = CACHE_VERSION
        return params

    def generator_params(self) -> dict[str, Any]:
        """Fields that change generated raw data (subclasses with a generator override)."""
        return {}

    def locate(self, paths: Paths, progress: bool = True) -> RawSource:
        """Resolve ``self.source`` to a `RawSource` (running the generator only when asked)."""
        if self.source in ("auto", "files"):
            searched = self.search_roots(paths.data_dir)
            for root in searched:
                raw = self.files_at(root)
                if raw is not None:
                    return raw
            listing = "\n".join(f"  - {p}" for p in searched)
            ways = "\n".join(f"  - {w}" for w in self.ways_out())
            raise DataError(
                f"task {self.name!r}: no raw data found under paths.data_dir="
                f"{paths.data_dir} (task.source={self.source}). Searched, in order:\n{listing}\n"
                f"Fix, any one of:\n{ways}"
            )
        if self.source == "hub":
            return RawSource(kind="hub", hub_id=self.HUB_ID)
        return self._generated(paths, progress)

    def _generated(self, paths: Paths, progress: bool) -> RawSource:
        params = {"task": self.name, **self.generator_params()}
        gen_parent = paths.data_dir / "generated"
        root = gen_parent / f"{self.name}-{stable_hash(params)[:12]}"
        if not (root / "GENERATED.json").exists():
            remove_stale_tmp(gen_parent)
            tmp = new_tmp_dir(gen_parent, self.name)
            with cleanup_on_error(tmp):
                self.generate(tmp, progress)
                (tmp / "GENERATED.json").write_text(json.dumps(params, indent=2) + "\n")
            publish_dir(tmp, root)
        for candidate in self.search_roots(root):  # the generator writes an official layout
            raw = self.files_at(candidate)
            if raw is not None:
                raw.kind = "generate"
                return raw
        raise DataError(f"{root}: generated data is not in the expected layout")  # pragma: no cover

    def build(
        self, paths: Paths | Mapping[str, Any], *, progress: bool = True, rebuild: bool = False
    ) -> Built:
        """Prepare (or reuse from the cache) the train/val/test `DatasetDict`."""
        paths = Paths.coerce(paths)
        was_enabled = datasets.is_progress_bar_enabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            return self._build(paths, progress, rebuild)
        finally:
            if was_enabled and not progress:
                datasets.enable_progress_bars()

    def _build(self, paths: Paths, progress: bool, rebuild: bool) -> Built:
        raw = self.locate(paths, progress)
        key = stable_hash({"params": self.cache_params(), "raw": raw.fingerprint()})[:20]
        parent = paths.cache_dir / self.name
        final = parent / key
        manifest_path = final / "manifest.json"
        if manifest_path.exists() and not rebuild:
            return self._load(final, cached=True)

        remove_stale_tmp(parent)
        tmp = new_tmp_dir(parent, key)
        with cleanup_on_error(tmp):
            start = time.perf_counter()
            work = tmp / "work"
            work.mkdir()
            processed = self.process(raw, work, progress)
            manifest = self._manifest(raw, key, processed)
            dd = DatasetDict({s: processed.splits[s] for s in SPLITS})
            dd.save_to_disk(str(tmp / "dataset"))
            del dd, processed
            shutil.rmtree(work, ignore_errors=True)
            manifest["build_seconds"] = round(time.perf_counter() - start, 3)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if rebuild and final.exists():
            shutil.rmtree(final)
        publish_dir(tmp, final)
        return self._load(final, cached=False)

    def _load(self, folder: Path, cached: bool) -> Built:
        manifest_path = folder / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        norm = self.runtime_normalization()
        if norm is not None:  # settings of this run, not of the run that built the cache
            manifest["normalization"] = norm
        dataset = datasets.load_from_disk(str(folder / "dataset"))
        return Built(dataset, manifest, manifest_path, cached)

    def _manifest(self, raw: RawSource, key: str, processed: Processed) -> dict[str, Any]:
        splits: dict[str, Any] = {}
        for s in SPLITS:
            ds = processed.splits.get(s)
            if ds is None or len(ds) == 0:
                where = raw.root or raw.hub_id
                raise DataError(
                    f"{where}: split {s!r} of task {self.name!r} is empty after reading. "
                    "Fix: check that the source files are complete (re-extract the archive) "
                    "or raise the generator's sizes"
                )
            labels = column_numpy(ds, "labels")
            counts = np.bincount(labels, minlength=self.num_classes)
            splits[s] = {
                "rows": len(ds),
                "labels": {str(i): int(c) for i, c in enumerate(counts)},
                **processed.split_info.get(s, {}),
                "content_sha256": dataset_digest(ds),
            }
        return {
            "task": self.name,
            "cache_key": key,
            "params": self.cache_params(),
            "source": raw.describe(),
            "val_is_test": self.val_is_test,
            "splits": splits,
            "dropped": dict(processed.dropped),
            "notes": dict(processed.notes),
            "normalization": processed.normalization,
            "created_unix": time.time(),
            "datasets_version": datasets.__version__,
            "pid": os.getpid(),
        }

    def check_labels(self, labels: np.ndarray, where: str) -> None:
        """Raise a `DataError` if any label is outside ``0..num_classes-1``."""
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: label {int(labels[i])} at row {i} is outside 0..{self.num_classes - 1}. "
                "Fix: the file is not in the expected format; re-extract it"
            )


def split_files_at(root: Path, files: list[Path], what: str, fix: str) -> RawSource | None:
    """A `RawSource` for a folder holding one file per split; None when none of them is there,
    an error naming the missing ones when only some are."""
    if not root.is_dir():
        return None
    present = [p.is_file() for p in files]
    if not any(present):
        return None
    if not all(present):
        missing = ", ".join(p.name for p, ok in zip(files, present, strict=True) if not ok)
        raise data_error(root, f"{what} folder is incomplete: missing {missing}", fix)
    return RawSource(kind="files", root=root, files=files)


def lra_roots(data_dir: Path, official: str, moved: str | None) -> list[Path]:
    """The standard search order for a folder of the LRA release.

    ``official`` is the path inside the release (e.g. ``listops-1000``), ``moved`` the S4 suite's
    moved folder relative to ``data_dir`` (e.g. ``listops``).
    """
    roots = [
        data_dir / "lra_release" / "lra_release" / official,
        data_dir / "lra_release" / official,
    ]
    if moved:
        roots.append(data_dir / moved)
    roots.append(data_dir / official)
    seen: list[Path] = []
    for r in roots:
        if r not in seen:
            seen.append(r)
    return seen


def random_split_indices(n: int, lengths: list[int], seed: int) -> list[np.ndarray]:
    """Indices of a seeded random split of ``range(n)``, like torch's ``random_split``.

    The permutation is ``torch.randperm(n, generator=manual_seed(seed))``, so with the same
    ``n``, lengths and seed the split equals the one S4/Mega's preprocessing made.
    """
    import torch

    if sum(lengths) != n:
        raise ValueError(f"split lengths {lengths} do not sum to {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    out, start = [], 0
    for length in lengths:
        out.append(perm[start : start + length])
        start += length
    return out


def indices_info(indices: np.ndarray, seed: Any, origin: str) -> dict[str, Any]:
    """Manifest entry for a split defined by indices into a pool."""
    arr = np.asarray(indices, dtype=np.int64)
    return {
        "origin": origin,
        "seed": seed,
        "indices_sha256": stable_hash(arr.tolist()),
        "indices": arr.tolist(),
    }
