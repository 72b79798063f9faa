"""Loading a dataset from the Hugging Face hub (or its local cache), only on request.

Used by ``source=hub`` (Text, Image). Works offline when the dataset is in the HF cache and
``HF_DATASETS_OFFLINE=1``/``HF_HUB_OFFLINE=1`` is set; otherwise fails with a `DataError` that
says what was tried and how to get the data instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import DatasetDict

from tasks.errors import DataError


def load_hub(hub_id: str, cache_dir: str | None, splits: Sequence[str]) -> DatasetDict:
    """``datasets.load_dataset(hub_id)`` with a clear error when it cannot be loaded."""
    import datasets

    try:
        dd = datasets.load_dataset(hub_id, cache_dir=cache_dir)
    except Exception as e:  # the hub client raises many types (connection, offline, 404, ...)
        offline = datasets.config.HF_HUB_OFFLINE
        raise DataError(
            f"hub dataset {hub_id!r}: could not be loaded "
            f"({'offline mode, ' if offline else ''}{type(e).__name__}: {e}). "
            f"Fix: run once with network access (task.source=hub) so it lands in the HF cache, "
            f"or use the raw files instead (task.source=files; see docs/data.md)"
        ) from e
    missing = [s for s in splits if s not in dd]
    if missing:
        raise DataError(
            f"hub dataset {hub_id!r}: has splits {sorted(dd)}, expected {list(splits)}. "
            "Fix: use the raw files (task.source=files)"
        )
    return dd
