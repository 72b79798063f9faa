"""`pretrain.json`: what a pretraining run (`stage=pretrain`) leaves in its run dir, in place of
the classifier's `results.json` (so the tables, which read `results.json`, never mistake a
masked-prediction score for a classification accuracy). A run dir holding it is finished:
`resume=true` leaves it as it is, a new run into it is refused (`run_dir.run_state`).

Keys: `stage` ("pretrain"), `task`, `model`, `experiment`, `seed`, `group`, `objective` (kind,
rate, target, outputs, mask_id, loss, metric; `span` with span masking), `monitor`,
`best_val_metric`, `test_metric` (at `best.ckpt`), `steps`, `train_seconds`, `params`,
`train_fraction`, `git_sha`, `data_source`, `data_manifest`, `model_info`, `best_checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mega_lra.atomic_files import write_json

FILE_NAME = "pretrain.json"


def write_pretrain_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(run_dir) / FILE_NAME
    write_json(path, {"stage": "pretrain", **record})
    return path


def read_pretrain_record(run_dir: Path) -> dict[str, Any] | None:
    """The record of a finished pretraining run dir, or None."""
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
