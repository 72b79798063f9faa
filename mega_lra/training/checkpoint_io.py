"""`AtomicCheckpointIO`: checkpoints that a kill can never leave half-written.

Lightning's own save goes through a temp file in `$TMPDIR` and a move, which is only atomic when
`$TMPDIR` is on the checkpoint's filesystem (otherwise a copy that SIGKILL can truncate) and does
not fsync. Here the checkpoint is written to a temp file in the checkpoint's own folder, flushed
and fsynced, then `os.replace`d over the old file (atomic on POSIX), and the folder is fsynced:
after a crash the path holds either the previous checkpoint or the new one, complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO.save_checkpoint does not take storage_options, got "
                f"{storage_options!r}"
            )
        atomic_torch_save(checkpoint, path)
