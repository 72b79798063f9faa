"""ListOps (LRA): nested MIN/MAX/MED/SM expressions over digits, 10 classes, length 2000 + eos.

Raw layout: ``listops-1000/basic_{train,val,test}.tsv`` (header ``Source\tTarget``), found under
``lra_release/lra_release/``, ``lra_release/``, the S4 suite's ``listops/`` or ``data_dir``
itself. Without files, ``source=auto`` raises one error listing the paths searched and the ways
out; only ``source=generate`` runs `tasks.generators.listops_expressions` (seeded) into
``<data_dir>/generated/<name>-<hash>/listops-1000/`` and reads it with the same reader.

Tokens: the fixed vocabulary of `tasks.tokenizers` (parentheses dropped, ``]`` is its own
token, eos appended). Splits: the official train/val/test files, as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from datasets import Features, List, Value

from tasks.base import Processed, RawSource, Task, lra_roots, split_files_at
from tasks.errors import data_error
from tasks.generators.listops_expressions import ListOpsSpec, write_listops
from tasks.storage import batched_map, column_numpy, write_arrow
from tasks.tokenizers import LISTOPS_VOCAB_SIZE, PAD_ID, encode_listops

FOLDER = "listops-1000"
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
RAW_FEATURES = Features({"source": Value("string"), "labels": Value("int64")})
TOKEN_FEATURES = Features({"input_ids": List(Value("int16")), "labels": Value("int64")})


def read_listops_tsv(path: Path, batch_rows: int = 8192):
    """Yield column batches ``{"source", "labels"}`` from one ListOps TSV, validating each line."""
    fix = "the file is truncated or edited; re-extract lra_release (or delete the generated folder)"
    sources: list[str] = []
    labels: list[int] = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if lineno == 1 and line == "Source\tTarget":
                continue
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip():
                raise data_error(
                    path,
                    f"expected 2 tab-separated fields (Source, Target), found {len(parts)}",
                    fix,
                    line=lineno,
                )
            try:
                label = int(parts[1])
            except ValueError:
                raise data_error(
                    path, f"Target {parts[1]!r} is not an integer 0-9", fix, line=lineno
                ) from None
            if not 0 <= label <= 9:
                raise data_error(path, f"Target {label} is outside 0-9", fix, line=lineno)
            sources.append(parts[0])
            labels.append(label)
            if len(sources) >= batch_rows:
                yield {"source": sources, "labels": labels}
                sources, labels = [], []
    if sources:
        yield {"source": sources, "labels": labels}


def _encode_batch(batch: dict[str, list], max_length: int) -> dict[str, Any]:
    return {
        "input_ids": [encode_listops(s, max_length) for s in batch["source"]],
        "labels": batch["labels"],
    }


@dataclass
class ListOpsTask(Task):
    """ListOps; ``gen_*`` fields configure the generator (used when ``source=generate``)."""

    name: str = "listops"
    num_classes: int = 10
    input_kind: str = "tokens"
    max_length: int = 2001
    vocab_size: int | None = LISTOPS_VOCAB_SIZE
    pad_id: int = PAD_ID
    head: str = "pooled"
    seed: int = 42
    gen_rows: dict[str, int] = field(
        default_factory=lambda: {"train": 96000, "val": 2000, "test": 2000}
    )
    gen_max_depth: int = 10
    gen_max_args: int = 10
    gen_min_length: int = 500
    gen_max_length: int = 2000

    NUM_CLASSES: ClassVar[int] = 10
    HAS_GENERATOR: ClassVar[bool] = True
    SPT_MASK_RATE: ClassVar[float | None] = 0.10

    def __post_init__(self) -> None:
        self.gen_rows = {k: int(v) for k, v in dict(self.gen_rows).items()}
        super().__post_init__()
        if self.vocab_size != LISTOPS_VOCAB_SIZE:
            raise data_error(
                "task.vocab_size",
                f"{self.vocab_size} does not match the fixed ListOps vocabulary",
                f"set task.vocab_size={LISTOPS_VOCAB_SIZE}",
            )

    def search_roots(self, data_dir: Path) -> list[Path]:
        return lra_roots(data_dir, FOLDER, "listops")

    def files_at(self, root: Path) -> RawSource | None:
        files = [root / SPLIT_FILES[s] for s in ("train", "val", "test")]
        return split_files_at(
            root,
            files,
            "ListOps",
            "re-extract listops-1000 from lra_release.gz, or use task.source=generate",
        )

    def how_to_get(self) -> str:
        return (
            "download https://storage.googleapis.com/long-range-arena/lra_release.gz (8.2 GB) and "
            "extract it into paths.data_dir (or move listops-1000 to <data_dir>/listops as S4 does)"
        )

    def generator_params(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rows": self.gen_rows,
            "spec": self._spec().__dict__,
        }

    def _spec(self) -> ListOpsSpec:
        return ListOpsSpec(
            max_depth=self.gen_max_depth,
            max_args=self.gen_max_args,
            min_length=self.gen_min_length,
            max_length=self.gen_max_length,
        )

    def generate(self, root: Path, progress: bool) -> None:
        write_listops(
            root / FOLDER, self.gen_rows, self._spec(), self.seed, self.num_proc, progress
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        splits = {}
        info = {}
        for split, path in zip(("train", "val", "test"), raw.files, strict=True):
            pool = write_arrow(work / f"raw-{split}.arrow", RAW_FEATURES, read_listops_tsv(path))
            self.check_labels(column_numpy(pool, "labels"), str(path))
            splits[split] = batched_map(
                pool,
                _encode_batch,
                features=TOKEN_FEATURES,
                out_file=work / f"tok-{split}.arrow",
                num_proc=self.num_proc,
                desc=f"tokenise ListOps {split}",
                fn_kwargs={"max_length": self.max_length},
            )
            info[split] = {"origin": path.name}
        return Processed(splits=splits, split_info=info)
