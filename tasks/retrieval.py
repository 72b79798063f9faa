"""Retrieval (LRA AAN): do two papers cite each other? Byte-level pairs, 2 classes.

Raw layout: ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` (``.eval.`` is the val split),
found under ``lra_release/lra_release/``, ``lra_release/``, the S4 suite's ``aan/`` or
``data_dir``. Each line has 5 tab-separated fields and there is no header:
``label`` (a float, 0 or 1), ``id1``, ``id2``, ``text1``, ``text2``. Lines are read as bytes,
so no text decoding can fail.

Tokens: the byte scheme of `tasks.tokenizers`, each document cut to ``max_length`` ids (4000 +
eos) on its own. The cached columns are ``input_ids_1``, ``input_ids_2`` and ``labels``; the
collator stacks them to (B, 2, L) for the retrieval head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from datasets import Features, List, Value

from tasks.base import Processed, RawSource, Task, lra_roots, split_files_at
from tasks.errors import data_error
from tasks.storage import batched_map, column_numpy, write_arrow
from tasks.tokenizers import BYTE_VOCAB_SIZE, PAD_ID, encode_bytes

FOLDER = "tsv_data"
SPLIT_FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
RAW_FEATURES = Features(
    {"text1": Value("binary"), "text2": Value("binary"), "labels": Value("int64")}
)
TOKEN_FEATURES = Features(
    {
        "input_ids_1": List(Value("int16")),
        "input_ids_2": List(Value("int16")),
        "labels": Value("int64"),
    }
)


def read_aan_tsv(path: Path, batch_rows: int = 4096) -> Iterator[dict[str, list]]:
    """Yield column batches from one AAN TSV, validating each line (5 fields, 0/1 label)."""
    fix = "the file is truncated or edited; re-extract tsv_data from lra_release.gz"
    batch: dict[str, list] = {"text1": [], "text2": [], "labels": []}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            parts = line.split(b"\t")
            if len(parts) != 5:
                raise data_error(
                    path,
                    f"expected 5 tab-separated fields (label, id1, id2, text1, text2), "
                    f"found {len(parts)}",
                    fix,
                    line=lineno,
                )
            try:
                value = float(parts[0])
            except ValueError:
                value = float("nan")
            if value not in (0.0, 1.0):
                raise data_error(
                    path,
                    f"label {parts[0][:20].decode('utf-8', 'replace')!r} is not 0 or 1",
                    fix + " (the first field must be the label; this file has no header)",
                    line=lineno,
                )
            batch["text1"].append(parts[3])
            batch["text2"].append(parts[4])
            batch["labels"].append(int(value))
            if len(batch["labels"]) >= batch_rows:
                yield batch
                batch = {"text1": [], "text2": [], "labels": []}
    if batch["labels"]:
        yield batch


def _encode_pairs(batch: dict[str, list], max_length: int) -> dict[str, Any]:
    return {
        "input_ids_1": [encode_bytes(t, max_length) for t in batch["text1"]],
        "input_ids_2": [encode_bytes(t, max_length) for t in batch["text2"]],
        "labels": batch["labels"],
    }


@dataclass
class RetrievalTask(Task):
    """LRA Retrieval on the ACL Anthology Network pairs."""

    name: str = "retrieval"
    num_classes: int = 2
    input_kind: str = "tokens"
    max_length: int = 4001
    vocab_size: int | None = BYTE_VOCAB_SIZE
    pad_id: int = PAD_ID
    head: str = "retrieval"

    NUM_CLASSES: ClassVar[int] = 2
    HEAD: ClassVar[str] = "retrieval"
    SPT_MASK_RATE: ClassVar[float | None] = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size != BYTE_VOCAB_SIZE:
            raise data_error(
                "task.vocab_size",
                f"{self.vocab_size} does not match the byte scheme",
                f"set task.vocab_size={BYTE_VOCAB_SIZE}",
            )

    def search_roots(self, data_dir: Path) -> list[Path]:
        return lra_roots(data_dir, FOLDER, "aan")

    def files_at(self, root: Path) -> RawSource | None:
        files = [root / SPLIT_FILES[s] for s in ("train", "val", "test")]
        return split_files_at(root, files, "AAN", "re-extract tsv_data from lra_release.gz")

    def how_to_get(self) -> str:
        return (
            "download https://storage.googleapis.com/long-range-arena/lra_release.gz (8.2 GB) and "
            "extract it into paths.data_dir (or move tsv_data to <data_dir>/aan as S4 does)"
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        splits, info = {}, {}
        for split, path in zip(("train", "val", "test"), raw.files, strict=True):
            pool = write_arrow(work / f"raw-{split}.arrow", RAW_FEATURES, read_aan_tsv(path))
            self.check_labels(column_numpy(pool, "labels"), str(path))
            splits[split] = batched_map(
                pool,
                _encode_pairs,
                features=TOKEN_FEATURES,
                out_file=work / f"tok-{split}.arrow",
                num_proc=self.num_proc,
                desc=f"tokenise AAN {split}",
                batch_size=128,
                fn_kwargs={"max_length": self.max_length},
            )
            info[split] = {"origin": path.name}
        return Processed(splits=splits, split_info=info)
