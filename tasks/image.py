"""Image (LRA sCIFAR, grayscale): CIFAR-10 as a sequence of 1024 gray pixels, 10 classes.

Sources: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the Toronto python archive,
extracted under ``paths.data_dir`` or S4's ``cifar/``), or with ``source=hub`` the HF dataset
``uoft-cs/cifar10``. The batch files are pickles; they are read with an unpickler that only
rebuilds numpy arrays, so a tampered file cannot run code.

Grayscale is PIL ``convert("L")`` (ITU-R 601-2, what torchvision's Grayscale computes), applied
to whole blocks of images at once. Pixels are cached as uint8; the collator normalises them
with ``(x / 255 - mean) / std`` (Mega: mean 0.48, std 0.24), or, with ``input_kind=tokens``,
maps pixel v to token ``3 + v`` (the byte scheme; vocab 259).

Splits: val = ``val_fraction`` (10%, 5k) of the 50k train images drawn by
``torch.randperm(50000, generator=manual_seed(42))`` as ``random_split`` does in S4/Mega
(first 45k of the permutation train, next 5k val); test = the official 10k.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Features, List, Value
from PIL import Image as PILImage

from tasks.base import Processed, RawSource, Task, indices_info, random_split_indices
from tasks.errors import DataError, data_error
from tasks.hub import load_hub
from tasks.storage import batched_map, write_arrow
from tasks.tokenizers import BYTE_VOCAB_SIZE, PAD_ID

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
SIDE = 32
RGB_FEATURES = Features(
    {"rgb": List(Value("uint8"), length=3 * SIDE * SIDE), "labels": Value("int64")}
)
GRAY_FEATURES = Features(
    {"inputs": List(Value("uint8"), length=SIDE * SIDE), "labels": Value("int64")}
)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072) uint8, labels (N,) int64) from one CIFAR-10 python batch file."""
    fix = "re-extract cifar-10-python.tar.gz (python -m tasks.prepare task=image download=true)"
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:
        raise data_error(path, f"not a readable CIFAR-10 batch pickle ({e})", fix) from e
    if not isinstance(obj, dict):
        raise data_error(path, "expected a dict with b'data' and b'labels'", fix)
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        shape = getattr(data, "shape", None)
        raise data_error(path, f"b'data' must be an (N, 3072) uint8 array, found {shape}", fix)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise data_error(
            path, f"{data.shape[0]} images but {labels.shape} labels; expected one each", fix
        )
    return data.astype(np.uint8, copy=False), labels


def rgb_planes_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(N, 3072) CIFAR planes (R, G, B) -> (N, 1024) uint8 via PIL ``convert("L")``."""
    n = rgb.shape[0]
    hwc = rgb.reshape(n, 3, SIDE, SIDE).transpose(0, 2, 3, 1).reshape(n * SIDE, SIDE, 3)
    gray = np.asarray(PILImage.fromarray(np.ascontiguousarray(hwc), mode="RGB").convert("L"))
    return gray.reshape(n, SIDE * SIDE)


def _gray_batch(batch: dict[str, list]) -> dict[str, Any]:
    rgb = np.asarray(batch["rgb"], dtype=np.uint8)
    return {"inputs": rgb_planes_to_gray(rgb), "labels": batch["labels"]}


def _gray_hub_batch(batch: dict[str, list]) -> dict[str, Any]:
    out = []
    for img in batch["img"]:
        if img.size != (SIDE, SIDE):
            raise DataError(f"hub image of size {img.size}, expected 32x32")
        out.append(np.asarray(img.convert("L"), dtype=np.uint8).reshape(-1))
    return {"inputs": np.stack(out), "labels": batch["label"]}


@dataclass
class ImageTask(Task):
    """LRA Image on grayscale CIFAR-10."""

    name: str = "image"
    num_classes: int = 10
    input_kind: str = "pixels"
    max_length: int = 1024
    vocab_size: int | None = None
    pad_id: int = PAD_ID
    head: str = "pooled"
    mean: float = 0.48
    std: float = 0.24
    val_fraction: float = 0.1
    seed: int = 42
    hub_cache_dir: str | None = None

    NUM_CLASSES: ClassVar[int] = 10
    ALLOWED_KINDS: ClassVar[tuple[str, ...]] = ("pixels", "tokens")
    HUB_ID: ClassVar[str | None] = "uoft-cs/cifar10"
    SPT_MASK_RATE: ClassVar[float | None] = 0.50
    SPT_PIXEL_LOSS: ClassVar[str] = "l1"
    NOT_CACHED: ClassVar[tuple[str, ...]] = (
        "num_proc",
        "source",
        "hub_cache_dir",
        "mean",
        "std",
        "input_kind",
        "vocab_size",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_signal_fields(self, SIDE * SIDE)
        if not 0 < self.val_fraction < 1:
            raise data_error(
                "task.val_fraction", f"{self.val_fraction} is not in (0, 1)", "use e.g. 0.1"
            )

    def search_roots(self, data_dir: Path) -> list[Path]:
        return [data_dir / FOLDER, data_dir / "cifar" / FOLDER]

    def files_at(self, root: Path) -> RawSource | None:
        if not root.is_dir():
            return None
        files = [root / f for f in [*TRAIN_FILES, TEST_FILE]]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise data_error(
                root,
                f"CIFAR-10 folder is incomplete: missing {', '.join(missing)}",
                "re-extract cifar-10-python.tar.gz (python -m tasks.prepare task=image "
                "download=true)",
            )
        return RawSource(kind="files", root=root, files=files)

    def how_to_get(self) -> str:
        return (
            "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it "
            "into paths.data_dir (giving <data_dir>/cifar-10-batches-py/)"
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        if raw.kind == "hub":
            hub = load_hub(self.HUB_ID, self.hub_cache_dir, ("train", "test"))
            base = {
                s: batched_map(
                    hub[s],
                    _gray_hub_batch,
                    features=GRAY_FEATURES,
                    out_file=work / f"gray-{s}.arrow",
                    num_proc=self.num_proc,
                    desc=f"grayscale CIFAR-10 {s}",
                )
                for s in ("train", "test")
            }
            origin = {s: f"hub {self.HUB_ID} split {s}" for s in base}
        else:
            groups = {"train": raw.files[:5], "test": raw.files[5:]}
            base, origin = {}, {}
            for s, files in groups.items():
                batches = []
                for path in files:
                    data, labels = read_cifar_batch(path)
                    self.check_labels(labels, str(path))
                    batches.append({"rgb": data, "labels": labels})
                pool = write_arrow(work / f"rgb-{s}.arrow", RGB_FEATURES, _as_lists(batches))
                base[s] = batched_map(
                    pool,
                    _gray_batch,
                    features=GRAY_FEATURES,
                    out_file=work / f"gray-{s}.arrow",
                    num_proc=self.num_proc,
                    desc=f"grayscale CIFAR-10 {s}",
                    batch_size=1000,
                )
                origin[s] = ", ".join(p.name for p in files) + " in this order"
        n = len(base["train"])
        n_val = round(self.val_fraction * n)
        if n_val < 1 or n_val >= n:
            raise DataError(
                f"{raw.root or raw.hub_id}: {n} train images cannot give a val split of "
                f"{self.val_fraction:.0%}. Fix: check the batch files or task.val_fraction"
            )
        tr, va = random_split_indices(n, [n - n_val, n_val], self.seed)
        tr, va = np.sort(tr), np.sort(va)
        splits = {
            "train": base["train"].select(tr),
            "val": base["train"].select(va),
            "test": base["test"],
        }
        info = {
            "train": indices_info(tr, self.seed, f"random_split of {origin['train']}"),
            "val": indices_info(va, self.seed, f"random_split of {origin['train']}"),
            "test": {"origin": origin["test"]},
        }
        return Processed(splits=splits, split_info=info, normalization=self.normalization())

    def normalization(self) -> dict[str, float]:
        """Collator scaling: ``(x * scale - mean) / std``."""
        return {"scale": 1 / 255, "mean": self.mean, "std": self.std}

    def runtime_normalization(self) -> dict[str, float]:
        return self.normalization()


def _as_lists(batches: list[dict[str, np.ndarray]]):
    for b in batches:
        yield {"rgb": list(b["rgb"]), "labels": b["labels"].tolist()}


def check_signal_fields(task: Task, length: int) -> None:
    """Shared checks for pixel tasks: length, and the token alternative's vocabulary."""
    if task.max_length != length:
        raise data_error(
            "task.max_length",
            f"{task.max_length} does not match the image size ({length} pixels)",
            f"set task.max_length={length}",
        )
    if task.input_kind == "tokens":
        if task.vocab_size is None:
            task.vocab_size = BYTE_VOCAB_SIZE
        if task.vocab_size != BYTE_VOCAB_SIZE:
            raise data_error(
                "task.vocab_size",
                f"{task.vocab_size} does not fit pixel tokens (3 + value)",
                f"set task.vocab_size={BYTE_VOCAB_SIZE} with task.input_kind=tokens",
            )
    elif task.vocab_size is not None:
        raise data_error(
            "task.vocab_size",
            f"{task.vocab_size} given for input_kind={task.input_kind}",
            "set task.vocab_size=null (only tokens have a vocabulary)",
        )
