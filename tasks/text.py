"""Text (LRA IMDB): byte-level movie-review sentiment, 2 classes, length 4000 + eos.

Sources: ``aclImdb/{train,test}/{pos,neg}/*.txt`` (the Stanford archive, extracted under
``paths.data_dir``), or with ``source=hub`` the HF dataset ``stanfordnlp/imdb`` (from the hub,
or offline from the HF cache). Labels: neg = 0, pos = 1 (as in the HF dataset).

Tokens: the byte scheme of `tasks.tokenizers` (pad 0, eos 1, unk 2, byte b -> 3 + b), cut to
``max_length`` ids including eos.

Splits: LRA validates on the test split; ``val_split=test`` (default) does the same and the
task reports ``val_is_test = True``. ``val_split=holdout`` instead holds out
``holdout_fraction`` of train (seeded) as val.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Features, List, Value

from tasks.base import Processed, RawSource, Task, indices_info, random_split_indices
from tasks.errors import DataError, data_error
from tasks.hub import load_hub
from tasks.storage import batched_map, write_arrow
from tasks.tokenizers import BYTE_VOCAB_SIZE, PAD_ID, encode_bytes

LABELS = {"neg": 0, "pos": 1}
POOL_FEATURES = Features({"path": Value("string"), "labels": Value("int64")})
TOKEN_FEATURES = Features({"input_ids": List(Value("int16")), "labels": Value("int64")})


def _read_encode(batch: dict[str, list], max_length: int) -> dict[str, Any]:
    ids = []
    for path in batch["path"]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise data_error(path, f"cannot read review file ({e})", "re-extract aclImdb") from e
        ids.append(encode_bytes(data, max_length))
    return {"input_ids": ids, "labels": batch["labels"]}


def _encode_text(batch: dict[str, list], max_length: int) -> dict[str, Any]:
    return {
        "input_ids": [encode_bytes(t, max_length) for t in batch["text"]],
        "labels": batch["label"],
    }


@dataclass
class TextTask(Task):
    """LRA Text on IMDB."""

    name: str = "text"
    num_classes: int = 2
    input_kind: str = "tokens"
    max_length: int = 4001
    vocab_size: int | None = BYTE_VOCAB_SIZE
    pad_id: int = PAD_ID
    head: str = "pooled"
    val_split: str = "test"
    holdout_fraction: float = 0.1
    seed: int = 42
    hub_cache_dir: str | None = None

    NUM_CLASSES: ClassVar[int] = 2
    HUB_ID: ClassVar[str | None] = "stanfordnlp/imdb"
    SPT_MASK_RATE: ClassVar[float | None] = 0.15
    NOT_CACHED: ClassVar[tuple[str, ...]] = ("num_proc", "source", "hub_cache_dir")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_split not in ("test", "holdout"):
            raise data_error(
                "task.val_split", f"{self.val_split!r} is not valid", "use test | holdout"
            )
        if self.val_split == "holdout" and not 0 < self.holdout_fraction < 1:
            raise data_error(
                "task.holdout_fraction",
                f"{self.holdout_fraction} is not in (0, 1)",
                "set e.g. task.holdout_fraction=0.1",
            )
        if self.vocab_size != BYTE_VOCAB_SIZE:
            raise data_error(
                "task.vocab_size",
                f"{self.vocab_size} does not match the byte scheme",
                f"set task.vocab_size={BYTE_VOCAB_SIZE}",
            )

    @property
    def val_is_test(self) -> bool:
        return self.val_split == "test"

    def search_roots(self, data_dir: Path) -> list[Path]:
        return [data_dir / "aclImdb", data_dir / "imdb" / "aclImdb"]

    def files_at(self, root: Path) -> RawSource | None:
        if not root.is_dir():
            return None
        dirs = [root / s / lab for s in ("train", "test") for lab in ("neg", "pos")]
        missing = [str(d.relative_to(root)) for d in dirs if not d.is_dir()]
        if missing:
            raise data_error(
                root,
                f"aclImdb folder is incomplete: missing {', '.join(missing)}",
                "re-extract aclImdb_v1.tar.gz (python -m tasks.prepare task=text download=true)",
            )
        return RawSource(kind="files", root=root, dirs=dirs)

    def how_to_get(self) -> str:
        return (
            "download http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz and extract "
            "it into paths.data_dir (giving <data_dir>/aclImdb/)"
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        if raw.kind == "hub":
            hub = load_hub(self.HUB_ID, self.hub_cache_dir, ("train", "test"))
            base = {
                s: batched_map(
                    hub[s],
                    _encode_text,
                    features=TOKEN_FEATURES,
                    out_file=work / f"tok-{s}.arrow",
                    num_proc=self.num_proc,
                    desc=f"tokenise IMDB {s}",
                    fn_kwargs={"max_length": self.max_length},
                )
                for s in ("train", "test")
            }
            origin = {s: f"hub {self.HUB_ID} split {s}" for s in base}
        else:
            base, origin = {}, {}
            for s in ("train", "test"):
                paths, labels = [], []
                for lab_name, lab in LABELS.items():
                    folder = raw.root / s / lab_name
                    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt")
                    paths += [str(p) for p in files]
                    labels += [lab] * len(files)
                if not paths:
                    raise DataError(
                        f"{raw.root / s}: no *.txt reviews in neg/ or pos/. "
                        "Fix: re-extract aclImdb_v1.tar.gz"
                    )
                pool = write_arrow(
                    work / f"pool-{s}.arrow", POOL_FEATURES, [{"path": paths, "labels": labels}]
                )
                base[s] = batched_map(
                    pool,
                    _read_encode,
                    features=TOKEN_FEATURES,
                    out_file=work / f"tok-{s}.arrow",
                    num_proc=self.num_proc,
                    desc=f"tokenise aclImdb {s}",
                    fn_kwargs={"max_length": self.max_length},
                )
                origin[s] = f"aclImdb/{s}/{{neg,pos}}/*.txt, sorted by name, neg first"
        info: dict[str, dict[str, Any]] = {"test": {"origin": origin["test"]}}
        if self.val_split == "test":
            splits = {"train": base["train"], "val": base["test"], "test": base["test"]}
            info["train"] = {"origin": origin["train"]}
            info["val"] = {"origin": "the test split (LRA convention, val_is_test)"}
        else:
            n = len(base["train"])
            n_val = max(1, round(self.holdout_fraction * n))
            train_idx, val_idx = random_split_indices(n, [n - n_val, n_val], self.seed)
            train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
            splits = {
                "train": base["train"].select(train_idx),
                "val": base["train"].select(val_idx),
                "test": base["test"],
            }
            info["train"] = indices_info(train_idx, self.seed, f"holdout of {origin['train']}")
            info["val"] = indices_info(val_idx, self.seed, f"holdout of {origin['train']}")
        return Processed(splits=splits, split_info=info)
