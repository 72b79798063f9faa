"""Run dirs with a results.json of known values, as the runner writes them (schema 2: with
`schema_version` and `model_info`) or as runs before schema 2 did (`legacy=True`: the identity
fields at the top level only)."""

from __future__ import annotations

import json
from pathlib import Path

from mega_lra.results.paper import load_paper
from mega_lra.results.record import IDENTITY_FIELDS, SCHEMA_VERSION

PAPER = load_paper()
# The paper's Table 2 setting per task (what a run must match to be compared).
ACT = PAPER.settings["attention_activation"]


def results_data(legacy: bool = False, **fields) -> dict:
    """A results.json's content (defaults: Mega, ListOps, real data, the paper's setting).
    `model_info=...` sets the model's description (the top-level identity fields follow it);
    otherwise it holds the identity fields given or defaulted (those not None)."""
    task = fields.get("task", "listops")
    model = fields.get("model", "mega")
    data = {
        "task": task,
        "model": model,
        "experiment": f"lra/{model}/{task}",
        "seed": 0,
        "group": f"{model}-{task}",
        "attention_activation": "softmax" if model == "transformer" else ACT.get(task, "softmax"),
        "chunk_size": PAPER.settings["chunk_size"].get(model, {}).get(task, -1),
        "ema_projection_size": None if model == "transformer" else 16,
        "normalization_type": "layernorm",
        "params": 600_000,
        "best_val_accuracy": 0.5,
        "test_accuracy": 0.5,
        "val_is_test": task == "text",
        "steps": 100,
        "train_seconds": 12.5,
        "git_sha": "0" * 40,
        "data_source": "files",
        "data_manifest": "ab" * 32,
    }
    info = fields.pop("model_info", None)
    data.update(fields)
    if legacy:
        assert info is None, "a file before schema 2 has no model_info"
        return data
    if info is None:
        info = {k: data[k] for k in IDENTITY_FIELDS if data[k] is not None}
    else:
        data.update({k: info.get(k) for k in IDENTITY_FIELDS})
    return {
        "schema_version": SCHEMA_VERSION,
        **data,
        "model_info": info,
        "test_checkpoint": "best.ckpt",
    }


def write_run(root: Path, rel: str, legacy: bool = False, **fields) -> Path:
    """A finished run dir `root/rel` with a results.json (see `results_data`) and, when given,
    a `config.yaml` (`config=TEXT`)."""
    config = fields.pop("config", None)
    data = results_data(legacy, **fields)
    run_dir = root / rel
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(data))
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    return run_dir


def seeds_of(root: Path, rel: str, accs: list[float], **fields) -> list[float]:
    """One run per seed with these test accuracies (fractions); returns them in percent."""
    for seed, acc in enumerate(accs):
        write_run(root, f"{rel}/{seed}", seed=seed, test_accuracy=acc, **fields)
    return [100 * a for a in accs]
