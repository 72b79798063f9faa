"""Atomic file writes: a file the suite writes is either the old one or the new one, complete.

Every file mega-lra writes (checkpoints, `results.json`, eval results, `config.yaml`, the CSV
log's rewrites, figures) goes through `atomic_write`: the content goes to a temp file in the
target's own folder (same filesystem, so the rename is atomic), which is flushed and fsynced,
then `os.replace`d over the target, and the folder is fsynced so the rename itself survives a
crash. A kill or an exception at any point leaves the previous file untouched and no temp file
behind (a SIGKILL may leave a `.<name>.<random>.tmp` sibling, never a truncated target).

The temp file is created with mode 0o666 less the umask, like a plain `open(path, "w")`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "fsync_dir",
    "torch_save",
    "write_bytes",
    "write_json",
    "write_text",
]


def _temp_beside(path: Path) -> tuple[int, Path]:
    """An exclusive new file next to ``path`` (same folder): (descriptor, its path)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 2^-32 per try
            continue


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems without directory fsync
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a new temp path beside ``path`` to write; on a clean exit the file written there is
    fsynced and replaces ``path`` (folders are created); an exception in the block discards it
    and leaves ``path`` as it was. Serves writers that take a file name (safetensors,
    matplotlib, a user's `save_function`); `atomic_write` builds on it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temp file for writing (``mode`` "w" text or "wb" bytes); on a clean exit it
    replaces ``path`` as `atomic_path` does."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode={mode!r}: expected 'w' or 'wb'")
    text = {"encoding": encoding, "newline": newline} if mode == "w" else {}
    with atomic_path(path) as tmp, open(tmp, mode, **text) as fh:
        yield fh


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> None:
    """``data`` as JSON (keys in their order) with a final newline."""
    write_text(path, json.dumps(data, indent=indent) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` of ``obj`` (a checkpoint), atomically."""
    import torch  # here, so that JSON and text writers do not import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)
