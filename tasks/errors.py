"""The one exception type for bad data and bad task configuration.

Every message says three things: where (file and line, or config key), what was expected, and
how to fix it. `tasks.prepare` prints the message without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Raw data or a task setting is unusable; the message names the place and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def data_error(where: str | Path, problem: str, fix: str, *, line: int | None = None) -> DataError:
    """Build a `DataError` with the standard three-part message."""
    place = f"{where}:{line}" if line is not None else str(where)
    return DataError(f"{place}: {problem}. Fix: {fix}")
