"""Small storage helpers: Arrow files, batched `datasets.map`, fingerprints, atomic folders.

Nothing here knows about a particular task. The cache layout itself lives in `tasks.base`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features

# Below this many rows per worker, extra processes cost more than they save.
MIN_ROWS_PER_PROC = 512


def write_arrow(path: Path, features: Features, batches: Iterable[dict[str, list]]) -> Dataset:
    """Stream ``batches`` (column dicts) into an Arrow file and open it memory-mapped."""
    schema = features.arrow_schema
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            table = pa.Table.from_pydict(batch, schema=schema)
            rows += table.num_rows
            writer.write_table(table)
    return Dataset.from_file(str(path))


def batched_map(
    ds: Dataset,
    fn: Callable[[dict[str, list]], dict[str, Any]],
    *,
    features: Features,
    out_file: Path,
    num_proc: int,
    desc: str,
    remove_columns: list[str] | None = None,
    batch_size: int = 256,
    fn_kwargs: dict[str, Any] | None = None,
) -> Dataset:
    """`Dataset.map(batched=True)` written to ``out_file`` (in the build's work folder)."""
    procs = max(1, min(num_proc, len(ds) // MIN_ROWS_PER_PROC))
    return ds.map(
        fn,
        batched=True,
        batch_size=batch_size,
        num_proc=procs if procs > 1 else None,
        features=features,
        remove_columns=remove_columns if remove_columns is not None else ds.column_names,
        cache_file_name=str(out_file),
        load_from_cache_file=False,
        fn_kwargs=fn_kwargs,
        desc=desc,
    )


def column_numpy(ds: Dataset, name: str) -> np.ndarray:
    """One scalar column as a numpy array, in one Arrow gather (no per-row Python objects)."""
    table = ds.select_columns([name]).with_format("arrow")[:]
    return table.column(name).to_numpy()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stat_fingerprint(path: Path) -> list[Any]:
    """``[name, size, mtime_ns]``: cheap identity of one file for the cache key."""
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def iter_files(root: Path) -> Iterator[os.DirEntry]:
    """All regular files under ``root``, depth first, in sorted order."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            yield from iter_files(Path(e.path))
        elif e.is_file():
            yield e


def listing_digest(root: Path) -> dict[str, Any]:
    """Digest of every file's relative path, size and mtime under ``root`` (no content read)."""
    h = hashlib.sha256()
    count = 0
    for e in iter_files(root):
        st = e.stat()
        rel = os.path.relpath(e.path, root)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        count += 1
    return {"files": count, "listing_sha256": h.hexdigest()}


def _hash_array(streams: dict[str, Any], key: str, arr: pa.Array) -> None:
    """Feed one Arrow array's logical values (not its buffers) into per-part hashers.

    Lengths, values and null masks go to separate streams (``key/len``, ``key/values``, ...),
    so feeding an array in one piece or in consecutive slices gives the same digests.
    """

    def stream(name: str) -> Any:
        return streams.setdefault(name, hashlib.sha256())

    if arr.null_count:
        stream(f"{key}/nulls").update(
            np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes()
        )
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if pa.types.is_fixed_size_list(t):
            lengths = np.full(len(arr), t.list_size, dtype=np.int64)
        else:
            lengths = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        stream(f"{key}/len").update(np.asarray(lengths, dtype=np.int64).tobytes())
        _hash_array(streams, f"{key}/values", arr.flatten())
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        values = np.ascontiguousarray(arr.to_numpy(zero_copy_only=False))
        stream(key).update(values.tobytes())
    else:  # strings, binaries, structs: rare in caches; slower but exact
        h = stream(key)
        for v in arr.to_pylist():
            h.update(json.dumps(v, default=repr).encode() + b"\n")


def dataset_digest(ds: Dataset, batch_rows: int = 4096) -> str:
    """SHA-256 of a split's contents: every column's Arrow type and values, in row order.

    It hashes logical values, so the same rows give the same digest whether the split is a
    ``select`` view, a fresh Arrow file or a reloaded cache, and whatever ``batch_rows`` is.
    """
    names = sorted(ds.column_names)
    streams: dict[str, Any] = {}
    view = ds.with_format("arrow")
    for start in range(0, len(ds), batch_rows):
        table = view[start : start + batch_rows]
        for n in names:
            _hash_array(streams, n, table.column(n).combine_chunks())
    schema = ds.features.arrow_schema
    return stable_hash(
        {
            "rows": len(ds),
            "types": {n: str(schema.field(n).type) for n in names},
            "streams": {k: h.hexdigest() for k, h in sorted(streams.items())},
        }
    )


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(parent: Path) -> None:
    """Delete ``.tmp-*-<pid>-*`` folders left by builds whose process is gone."""
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if not p.name.startswith(".tmp-"):
            continue
        parts = p.name.split("-")
        try:
            pid = int(parts[-2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def new_tmp_dir(parent: Path, label: str) -> Path:
    """A fresh private folder ``parent/.tmp-<label>-<pid>-<rand>``."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".tmp-{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def publish_dir(tmp: Path, final: Path) -> bool:
    """Atomically rename a finished ``tmp`` folder to ``final``.

    Returns False (and deletes ``tmp``) when another process published ``final`` first.
    """
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise
    return True


@contextlib.contextmanager
def cleanup_on_error(path: Path) -> Iterator[None]:
    """Remove ``path`` if the block raises (or is interrupted)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
