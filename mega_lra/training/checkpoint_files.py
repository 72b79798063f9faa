"""Checkpoint files: written atomically, read without running anything from them.

Writing: Lightning's own save goes through a temp file in `$TMPDIR` and a move, which is only
atomic when `$TMPDIR` is on the checkpoint's filesystem (otherwise a copy that SIGKILL can
truncate) and does not fsync. `AtomicCheckpointIO` writes through `mega_lra.atomic_files`: after
a crash the path holds either the previous checkpoint or the new one, complete.

Reading: a checkpoint is a pickle, and a pickle can name any callable to run while it loads, so
`python -m mega_lra.eval ckpt_path=downloaded.ckpt` or `resume=true` on a file from elsewhere
could run code from it. `load_checkpoint` (used by the runner, and by Lightning through
`AtomicCheckpointIO.load_checkpoint` for `fit(ckpt_path=...)` / `test(ckpt_path=...)`) loads with
`torch.load(weights_only=True)`: only tensors, plain Python values and the types in
`ALLOWED_GLOBALS` may be built; a checkpoint naming anything else is refused with one
`UnsafeCheckpointError` naming the file and the types, before any of it is built.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mega_lra.atomic_files import torch_save

# What our checkpoints hold besides tensors and plain Python values: nothing. Lightning's own
# state (loops, callbacks, optimisers, schedulers, the precision plugin) is plain, and the module
# stores the RNG states as tensors and plain values (`mega_lra.training.module.rng_states`);
# `tests/training/test_checkpoint_safety.py` checks a real run's checkpoint against this list.
# A type a future checkpoint needs is added here (classes or functions, as for
# `torch.serialization.safe_globals`), and is allowed only while our loader runs.
ALLOWED_GLOBALS: tuple[Any, ...] = ()


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as one."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that names types outside the allow-list; nothing from it was run."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's content, loaded with `weights_only=True` and `ALLOWED_GLOBALS`.

    Raises `UnsafeCheckpointError` (naming the file and the offending types) for a checkpoint
    that would build anything else, `CheckpointError` for a file that is not a readable
    checkpoint, `FileNotFoundError` for a missing one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with _allowed():
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(_refusal(path, err)) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint ({err}). Fix: check that the file "
                "is complete (a copy may have been cut) and was written by torch.save"
            ) from None


def _allowed() -> contextlib.AbstractContextManager:
    """`ALLOWED_GLOBALS` allowed for the duration of one load (not process-wide)."""
    if not ALLOWED_GLOBALS:
        return contextlib.nullcontext()
    return torch.serialization.safe_globals(list(ALLOWED_GLOBALS))


def _refusal(path: Path, err: Exception) -> str:
    """The refusal message: the file and the types its pickle names beyond the allow-list
    (found by reading the pickle's opcodes, which builds nothing)."""
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (AttributeError, ValueError, RuntimeError, OSError):  # torch < 2.5, or no zip
        names = []
    what = (
        f"names {', '.join(names)}, which mega-lra checkpoints never hold"
        if names
        else f"holds something the weights-only loader rejects ({str(err).splitlines()[0]})"
    )
    return (
        f"{path}: refused to load this checkpoint: its pickle {what}. Loading it could run code "
        "from the file; nothing from it was run. Fix: use a checkpoint written by mega-lra (a "
        "run dir's checkpoints/last.ckpt or best.ckpt); if you trust the file and the type is "
        "harmless data, add the type to ALLOWED_GLOBALS in mega_lra/training/checkpoint_files.py"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin: atomic saves, safe loads (`Trainer(plugins=[...])`)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO.save_checkpoint does not take storage_options, got "
                f"{storage_options!r}"
            )
        torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | str | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Always the safe load, whatever `weights_only` Lightning passes (its default,
        None, means `weights_only=False` in torch < 2.6)."""
        return load_checkpoint(path, map_location=map_location)
