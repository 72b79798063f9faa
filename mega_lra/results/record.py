"""`results.json`: the one record a finished run leaves, written by the runner and read by
`table`, `plot` and `reproduce`. Its keys and their checks live here and nowhere else.

A record holds what was run (`task`, `model`, `experiment`, `seed`, `group`), what the model is
(`model_info`: the classifier's `describe()`, e.g. `{"backbone": ..., "label": "Mega",
"mixer": "mega", "attention_activation": "softmax", "chunk_size": -1, ...}`), and how it did
(`best_val_accuracy`, `test_accuracy` as fractions, `steps`, ...). The identity fields that tables
and ablations group by (`attention_activation`, `chunk_size`, `ema_projection_size`,
`normalization_type`) are read from `model_info`, None where the model does not have them; the
file repeats them at the top level for a reader with `jq`, and a file where the two disagree is
refused.

Versions: `schema_version` 2 (this one) added `schema_version` and `model_info`. A file without
them (written before) is still read: its `model_info` is rebuilt from its top-level identity
fields (those that are not null).

Optional, in schema 2 files only where it applies: `spt`, the self-pretraining bookkeeping of a
run fine-tuned from a pretraining run (`role: finetuned`: the pretraining run dir, checkpoint
path and SHA-256, objective, masking rate, loss, its best validation metric, `pretrain_steps`,
`finetune_steps`, `total_steps`, `train_fraction`) or of a from-scratch control
(`role: compute_matched` or `from_scratch` with a step budget). A file without it is a plain
run; readers that predate it ignore it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mega_lra.atomic_files import write_json

SCHEMA_VERSION = 2
FILE_NAME = "results.json"
DATA_SOURCES = ("files", "hub", "generate")
# What a model is, as tables and ablations group runs: read from `model_info`.
IDENTITY_FIELDS = (
    "attention_activation",
    "chunk_size",
    "ema_projection_size",
    "normalization_type",
)


class ResultsError(ValueError):
    """A results.json (or a record) that cannot be used; the message names the file and the key."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _is_fraction(v: Any) -> bool:
    return is_number(v) and 0 <= v <= 1


def _is_json(v: Any) -> bool:
    """A JSON value (what `json.dumps` writes without loss)."""
    if v is None or isinstance(v, (str, bool)) or _is_int(v):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)):
        return all(_is_json(x) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _is_json(x) for k, x in v.items())
    return False


# key -> (check, what was expected); the order is the file's.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "task": (_is_name, "a task name"),
    "model": (_is_name, "a model name"),
    "experiment": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "seed": (_is_int, "an integer"),
    "group": (_is_name, "a non-empty string"),
    "attention_activation": (_optional(_is_name), "a string or null"),
    "chunk_size": (_optional(_is_int), "an integer (-1 = full) or null"),
    "ema_projection_size": (_optional(lambda v: _is_int(v) and v >= 0), "an integer >= 0"),
    "normalization_type": (_optional(_is_name), "a string or null"),
    "params": (_optional(_is_int), "an integer"),
    "best_val_accuracy": (_optional(_is_fraction), "a fraction in [0, 1] or null"),
    "test_accuracy": (_is_fraction, "a fraction in [0, 1]"),
    "val_is_test": (lambda v: isinstance(v, bool), "true or false"),
    "steps": (_is_int, "an integer"),
    "train_seconds": (_optional(is_number), "a number"),
    "git_sha": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "data_source": (lambda v: v in DATA_SOURCES, "one of files, hub, generate"),
    "data_manifest": (_optional(lambda v: isinstance(v, str)), "a string or null"),
}
# Keys every results.json has (DESIGN.md's table), old or new.
REQUIRED_KEYS = tuple(CHECKS)
SCHEMA_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "schema_version": (
        lambda v: _is_int(v) and 1 <= v <= SCHEMA_VERSION,
        f"an integer from 1 to {SCHEMA_VERSION} (a newer mega-lra wrote it?)",
    ),
    "model_info": (
        lambda v: isinstance(v, Mapping) and _is_json(v),
        "an object of JSON values (the model's describe())",
    ),
    "test_checkpoint": (_optional(lambda v: isinstance(v, str)), "a file name or null"),
    "spt": (
        _optional(lambda v: isinstance(v, Mapping) and _is_json(v) and _is_name(v.get("role"))),
        "null or an object of JSON values with a 'role' (self-pretraining bookkeeping)",
    ),
}


def _check(key: str, value: Any, where: str, checks: Mapping = CHECKS) -> None:
    test, expected = checks[key]
    if not test(value):
        raise ResultsError(f"{where}: key '{key}' = {value!r}, expected {expected}")


@dataclass(frozen=True)
class Results:
    """One run's `results.json`. Built by the runner (`Results(...)`, then `write(run_dir)`),
    read by `read_results(path)`. Checked when built: a bad value raises ResultsError."""

    task: str
    model: str
    experiment: str | None
    seed: int
    group: str
    params: int | None
    best_val_accuracy: float | None  # fraction; None when no validation ran
    test_accuracy: float  # fraction, at the best-validation checkpoint
    val_is_test: bool
    steps: int
    train_seconds: float | None
    git_sha: str | None
    data_source: str
    data_manifest: str | None
    model_info: dict[str, Any] = field(default_factory=dict)  # the classifier's describe()
    test_checkpoint: str | None = None  # file name of the checkpoint tested
    spt: dict[str, Any] | None = None  # self-pretraining bookkeeping (absent: a plain run)
    schema_version: int = field(default=SCHEMA_VERSION, init=False)

    def __post_init__(self) -> None:
        self._validate("results")
        # a copy in the form the file holds (tuples as lists): the record reads back equal
        object.__setattr__(self, "model_info", json.loads(json.dumps(self.model_info)))
        if self.spt is not None:
            object.__setattr__(self, "spt", json.loads(json.dumps(self.spt)))

    def _validate(self, where: str) -> None:
        _check("model_info", self.model_info, where, SCHEMA_CHECKS)
        for key in REQUIRED_KEYS:
            _check(
                key, getattr(self, key), f"{where}: model_info" if key in IDENTITY_FIELDS else where
            )
        _check("test_checkpoint", self.test_checkpoint, where, SCHEMA_CHECKS)
        _check("spt", self.spt, where, SCHEMA_CHECKS)

    # identity fields: from model_info, None where the model lacks them (never a default)
    @property
    def attention_activation(self) -> str | None:
        return self.model_info.get("attention_activation")

    @property
    def chunk_size(self) -> int | None:
        return self.model_info.get("chunk_size")

    @property
    def ema_projection_size(self) -> int | None:
        return self.model_info.get("ema_projection_size")

    @property
    def normalization_type(self) -> str | None:
        return self.model_info.get("normalization_type")

    def to_dict(self) -> dict[str, Any]:
        """The file's content: `schema_version` first, DESIGN.md's keys in their order (the
        identity fields copied from `model_info`), then `model_info` and `test_checkpoint`."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        out.update((key, getattr(self, key)) for key in REQUIRED_KEYS)
        out["model_info"] = dict(self.model_info)
        out["test_checkpoint"] = self.test_checkpoint
        if self.spt is not None:
            out["spt"] = dict(self.spt)
        return out

    def write(self, run_dir: Path) -> Path:
        """Writes `<run_dir>/results.json` atomically (whole or not at all); returns its path.
        Whether the run dir may be written is the caller's decision (`run_state`)."""
        path = Path(run_dir) / FILE_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | Path = "results") -> Results:
        """A record from a file's content, old or new; `where` (the file) names it in errors.

        schema_version 2: every key of DESIGN.md's table plus `model_info`; the top-level
        identity fields must equal `model_info`'s (null where it lacks them). Without
        `schema_version` (or 1): the old format, `model_info` rebuilt from the top-level
        identity fields."""
        where = str(where)
        if not isinstance(data, Mapping):
            raise ResultsError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)
        _check("schema_version", version, where, SCHEMA_CHECKS)
        for key in REQUIRED_KEYS:
            if key not in data:
                raise ResultsError(f"{where}: missing required key '{key}'")
            _check(key, data[key], where)
        if version >= 2:
            if "model_info" not in data:
                raise ResultsError(f"{where}: missing required key 'model_info'")
            info = data["model_info"]
            _check("model_info", info, where, SCHEMA_CHECKS)
            for key in IDENTITY_FIELDS:
                if key in info:
                    _check(key, info[key], f"{where}: model_info", CHECKS)
            for key in IDENTITY_FIELDS:
                if data[key] != info.get(key):
                    raise ResultsError(
                        f"{where}: key '{key}' = {data[key]!r} disagrees with "
                        f"model_info.{key} = {info.get(key)!r} (where the tables read it)"
                    )
            info = dict(info)
        else:
            info = {k: data[k] for k in IDENTITY_FIELDS if data[k] is not None}
        test_checkpoint = data.get("test_checkpoint")
        _check("test_checkpoint", test_checkpoint, where, SCHEMA_CHECKS)
        values = {key: data[key] for key in REQUIRED_KEYS if key not in IDENTITY_FIELDS}
        if values["best_val_accuracy"] is not None:
            values["best_val_accuracy"] = float(values["best_val_accuracy"])
        values["test_accuracy"] = float(values["test_accuracy"])
        spt = data.get("spt")
        _check("spt", spt, where, SCHEMA_CHECKS)
        return cls(**values, model_info=info, test_checkpoint=test_checkpoint, spt=spt)


def load_json(path: Path) -> Any:
    """The parsed content of a results.json; ResultsError naming the file when it cannot be read
    or is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: cannot read: {err}") from err
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from err


def read_results(path: Path | str) -> Results:
    """The record of a results.json (or of the run dir holding one). Raises ResultsError naming
    the file and the offending key."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    return Results.from_dict(load_json(path), path)
