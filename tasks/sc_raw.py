"""SC-Raw (Speech Commands v0.02, 10 words): raw 16 kHz waveforms of 16000 samples, 10 classes.

Raw layout: ``speech_commands/<word>/*.wav`` (the v0.02 archive extracted into that folder; S4's
``SpeechCommands/speech_commands_v0.02/`` and a bare ``speech_commands_v0.02/`` are searched
too). Classes, in label order: yes no up down left right on off stop go (``task.words``; quote
them in YAML, where bare yes/no/on/off are booleans). WAVs are read with ``soundfile`` (no
FFmpeg). Within a class, files are taken in sorted name order.

As in S4/Mega, only clips of exactly 16000 samples are kept: shorter ones are dropped (counted
as ``short_clip``; the full release keeps 34,975). A longer clip, another sample rate, several
channels or an unreadable file is a `DataError` naming the file.

``split`` (recorded in the manifest):

* ``s4`` (default): S4's and the Mega paper's split, `s4_split`: scikit-learn
  ``train_test_split(train_size=0.7, random_state=0, shuffle=True, stratify=labels)``, then the
  remaining 30% with ``train_size=0.5, random_state=1``, stratified; first half val, second half
  test: 24,482 / 5,246 / 5,247 clips on the full release. S4 listed each class folder with
  unsorted ``os.listdir`` (filesystem order), which nobody can reproduce; on the sorted listing
  the sizes and class balance are the same but the members differ.
* ``seeded``: per class, a ``numpy.random.default_rng(seed)`` permutation cut by
  ``split_fractions`` (first 70% train, next 15% val, rest test).

``normalization`` (samples are cached as int16; the collator applies ``(x * scale - mean) / std``):

* ``s4`` (default): what S4's and Mega's preprocessing fed the model. Their loader reads WAVs
  with ``torchaudio.load`` (float32 in [-1, 1]) and divides again by 2**15, so ``scale`` is
  2**-30; it then standardises each of the 16000 time steps separately with that step's mean
  and unbiased std over the training clips, plus 1e-5 in the denominator. At that scale the
  1e-5 dominates typical std values, so the inputs are far from unit variance (the manifest
  records the resulting per-step std range under ``normalization.normalised_std``).
* ``global``: one mean and (population) std over all samples of the training split after
  dividing by 2**15: inputs of unit variance.

``classes: 35`` is S4's full setting: all 35 word folders (labels in S4's order, `SC35_WORDS`),
the release's ``validation_list.txt`` / ``testing_list.txt`` for val / test (the rest is train),
short clips zero-padded to 16000 (counted in ``notes.padded_short_clips``), nothing dropped; the
same two normalisations (S4 also standardised each time step there).

See docs/data.md for the evidence (S4's ``src/dataloaders/datasets/sc.py``, Mega's
``fairseq/data/audio/speech_commands_dataset.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from datasets import Features, List, Value

from tasks.base import Processed, RawSource, Task, indices_info
from tasks.errors import DataError, data_error
from tasks.storage import batched_map, column_numpy, write_arrow
from tasks.tokenizers import PAD_ID

SC10_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
# The 35 words of v0.02 in the label order of S4's (and Mega's) 35-class setting.
SC35_WORDS = [
    "bed", "cat", "down", "five", "forward", "go", "house", "left", "marvin", "no", "on",
    "right", "sheila", "tree", "up", "visual", "yes", "backward", "bird", "dog", "eight",
    "follow", "four", "happy", "learn", "nine", "off", "one", "seven", "six", "stop", "three",
    "two", "wow", "zero",
]  # fmt: skip
LIST_FILES = ("validation_list.txt", "testing_list.txt")  # the release's official val / test
SPLITS_KINDS = ("s4", "seeded")
NORMALIZATIONS = ("s4", "global")
S4_FRACTIONS = [0.7, 0.15, 0.15]
S4_EPS = 1e-5  # added to the std by S4's normalise_data
POOL_FEATURES = Features({"path": Value("string"), "labels": Value("int64")})


def _decode_batch(batch: dict[str, list], length: int, sample_rate: int) -> dict[str, Any]:
    import soundfile as sf

    n = len(batch["path"])
    audio = np.zeros((n, length), dtype=np.int16)
    short = np.zeros(n, dtype=bool)
    for i, path in enumerate(batch["path"]):
        try:
            data, rate = sf.read(path, dtype="int16", always_2d=True)
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / OSError
            raise DataError(
                f"{path}: not a readable WAV ({type(e).__name__}: {e}). "
                "Fix: re-extract speech_commands_v0.02.tar.gz or delete this file"
            ) from None
        if rate != sample_rate:
            raise DataError(
                f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz. "
                "Fix: use the original Speech Commands v0.02 files (16 kHz)"
            )
        if data.shape[1] != 1:
            raise DataError(
                f"{path}: {data.shape[1]} channels, expected mono. "
                "Fix: use the original Speech Commands v0.02 files"
            )
        if data.shape[0] > length:
            raise DataError(
                f"{path}: {data.shape[0]} samples, expected at most {length} (1 s at "
                f"{sample_rate} Hz). Fix: use the original Speech Commands v0.02 files"
            )
        short[i] = data.shape[0] < length
        audio[i, : data.shape[0]] = data[:, 0]  # a short clip is zero-padded (dropped for SC10)
    return {"inputs": audio, "labels": batch["labels"], "short": short}


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Indices of a per-class seeded split; each class is cut by ``fractions`` (rounded)."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return [np.sort(np.concatenate(p)) for p in parts]


def s4_split(labels: np.ndarray) -> list[np.ndarray]:
    """[train, val, test] indices of S4's SC10 split of clips with these ``labels``.

    scikit-learn's stratified ``train_test_split`` of ``range(n)``: 70% train (random_state 0),
    then the other 30% halved (random_state 1), first half val. Indices come in sklearn's order.
    Raises ``ValueError`` (from sklearn) when a class is too small to stratify.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    train, rest, _, rest_labels = train_test_split(
        idx, labels, train_size=0.7, random_state=0, shuffle=True, stratify=labels
    )
    val, test = train_test_split(
        rest, train_size=0.5, random_state=1, shuffle=True, stratify=rest_labels
    )
    return [train, val, test]


def read_file_list(path: Path) -> set[str]:
    """The ``<word>/<file>.wav`` entries of an official list file, each line checked."""
    entries = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        parts = entry.split("/")
        if len(parts) != 2 or not parts[1].endswith(".wav"):
            raise data_error(
                path,
                f"expected a <word>/<file>.wav entry, found {entry[:80]!r}",
                "re-extract speech_commands_v0.02.tar.gz",
                line=lineno,
            )
        entries.add(entry)
    return entries


def official_split(root: Path, paths: list[str]) -> list[np.ndarray]:
    """[train, val, test] indices of ``paths``: val = in validation_list.txt, test = in
    testing_list.txt (checked in that order, as S4 did), train = the rest."""
    val_set, test_set = (read_file_list(root / name) for name in LIST_FILES)
    where = np.zeros(len(paths), dtype=np.int64)
    for i, p in enumerate(paths):
        key = "/".join(Path(p).parts[-2:])
        where[i] = 1 if key in val_set else 2 if key in test_set else 0
    return [np.flatnonzero(where == k) for k in range(3)]


def audio_stats(ds, scale: float, chunk: int = 512) -> tuple[float, float]:
    """Mean and population std of ``inputs * scale`` over all samples of ``ds`` (float64 sums)."""
    total = total_sq = 0.0
    count = 0
    arrow = ds.with_format("numpy")
    for start in range(0, len(ds), chunk):
        x = np.asarray(arrow[start : start + chunk]["inputs"], dtype=np.float64) * scale
        total += float(x.sum())
        total_sq += float(np.square(x).sum())
        count += x.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    return mean, float(np.sqrt(var)) or 1.0


def timestep_stats(ds, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per time step, the mean and unbiased std of the int16 ``inputs`` over the rows of ``ds``.

    Sums are exact (int64); the result is in int16 units, float64.
    """
    arrow = ds.with_format("numpy")
    total = total_sq = None
    for start in range(0, len(ds), chunk):
        x = np.asarray(arrow[start : start + chunk]["inputs"], dtype=np.int64)
        s, sq = x.sum(axis=0), np.square(x).sum(axis=0)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
    n = len(ds)
    if n < 2:
        raise ValueError(f"per-step statistics need at least 2 training clips, got {n}")
    mean = total / n
    var = (total_sq.astype(np.float64) - total.astype(np.float64) * mean) / (n - 1)
    return mean, np.sqrt(np.maximum(var, 0.0))


def s4_normalization(train) -> dict[str, Any]:
    """The collator scaling of ``normalization=s4`` from the training split (see module doc)."""
    scale = 2.0**-30  # torchaudio.load's 1/2**15, then S4's own 1/2**15
    mean, std = timestep_stats(train)
    sd = std * scale
    divisor = sd + S4_EPS
    reached = sd / divisor  # the std each step has after normalisation (train split)
    return {
        "kind": "s4_per_timestep",
        "scale": scale,
        "eps": S4_EPS,
        "mean": (mean * scale).tolist(),
        "std": divisor.tolist(),  # includes eps: the collator divides by it
        "normalised_std": {
            "min": float(reached.min()),
            "mean": float(reached.mean()),
            "max": float(reached.max()),
        },
    }


@dataclass
class SCRawTask(Task):
    """SC10 raw audio (Mega's SC-Raw)."""

    name: str = "sc_raw"
    num_classes: int = 10
    input_kind: str = "audio"
    max_length: int = 16000
    vocab_size: int | None = None
    pad_id: int = PAD_ID
    head: str = "pooled"
    classes: int = 10
    words: list[str] = field(default_factory=lambda: list(SC10_WORDS))
    sample_rate: int = 16000
    split: str = "s4"
    split_fractions: list[float] = field(default_factory=lambda: list(S4_FRACTIONS))
    seed: int = 42
    normalization: str = "s4"

    NUM_CLASSES: ClassVar[int] = 0  # 10 or 35: checked against task.classes below
    ALLOWED_KINDS: ClassVar[tuple[str, ...]] = ("audio",)
    SPT_MASK_RATE: ClassVar[float | None] = 0.25

    def __post_init__(self) -> None:
        self._check_words()
        self.split_fractions = [float(x) for x in self.split_fractions]
        super().__post_init__()
        if self.classes not in (10, 35):
            raise data_error(
                "task.classes", f"{self.classes!r} is not valid", "use 10 (SC10) or 35 (all words)"
            )
        if self.num_classes != self.classes:
            raise data_error(
                "task.num_classes",
                f"{self.num_classes} differs from task.classes={self.classes}",
                "set task.classes only (the shipped YAML derives num_classes from it)",
            )
        if len(self.words) != 10 or len(set(self.words)) != len(self.words):
            raise data_error(
                "task.words",
                f"{self.words} must be 10 distinct words (the SC10 subset, in label order)",
                "list each Speech Commands folder name once",
            )
        if self.classes == 35 and (self.words != SC10_WORDS or self.split != "s4"):
            key = "task.words" if self.words != SC10_WORDS else "task.split"
            raise data_error(
                key,
                "applies to the 10-class setting only; task.classes=35 uses all 35 word folders "
                "and the release's validation_list.txt / testing_list.txt, as S4 did",
                f"drop the {key} override",
            )
        if self.split not in SPLITS_KINDS:
            raise data_error(
                "task.split", f"{self.split!r} is not valid", f"use {' | '.join(SPLITS_KINDS)}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise data_error(
                "task.normalization",
                f"{self.normalization!r} is not valid",
                f"use {' | '.join(NORMALIZATIONS)}",
            )
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise data_error(
                "task.split_fractions",
                f"{self.split_fractions} must be 3 fractions summing to 1",
                "use e.g. [0.7,0.15,0.15]",
            )
        if self.split == "s4" and self.split_fractions != S4_FRACTIONS:
            raise data_error(
                "task.split_fractions",
                f"{self.split_fractions} applies only to task.split=seeded; task.split=s4 is "
                "S4's fixed 70/15/15",
                "add task.split=seeded, or leave task.split_fractions at [0.7,0.15,0.15]",
            )
        if self.vocab_size is not None:
            raise data_error("task.vocab_size", "audio has no vocabulary", "set it to null")

    def _check_words(self) -> None:
        if isinstance(self.words, str) or not isinstance(self.words, (list, tuple)):
            raise data_error(
                "task.words",
                f"{self.words!r} is not a list of words",
                'write a list, e.g. ["yes", "no", "up", ...]',
            )
        for i, w in enumerate(self.words):
            if not isinstance(w, str):
                raise data_error(
                    "task.words",
                    f"entry {i} is {w!r} ({type(w).__name__}), expected a word (a string); "
                    "YAML reads bare yes/no/on/off as booleans",
                    'quote every word in the YAML list: ["yes", "no", "on", "off", ...]',
                )
        self.words = list(self.words)

    def label_words(self) -> list[str]:
        """Word folders in label order: ``words`` (SC10) or all 35 words in S4's order."""
        return list(self.words) if self.classes == 10 else list(SC35_WORDS)

    def cache_params(self) -> dict[str, Any]:
        params = super().cache_params()
        if self.split == "s4":  # the seeded split's settings change nothing here
            del params["seed"], params["split_fractions"]
        if self.classes == 35:
            params["words"] = self.label_words()
        return params

    def search_roots(self, data_dir: Path) -> list[Path]:
        return [
            data_dir / "speech_commands",
            data_dir / "SpeechCommands" / "speech_commands_v0.02",
            data_dir / "speech_commands_v0.02",
        ]

    def files_at(self, root: Path) -> RawSource | None:
        if not root.is_dir():
            return None
        dirs = [root / w for w in self.label_words()]
        missing = [d.name for d in dirs if not d.is_dir()]
        if len(missing) == len(dirs):
            return None
        if missing:
            raise data_error(
                root,
                f"Speech Commands folder lacks the word folders {', '.join(missing)} "
                + ("(from task.words)" if self.classes == 10 else "(35-class setting)"),
                "re-extract speech_commands_v0.02.tar.gz into this folder",
            )
        files = []
        if self.classes == 35:
            files = [root / name for name in LIST_FILES]
            absent = [p.name for p in files if not p.is_file()]
            if absent:
                raise data_error(
                    root,
                    f"the 35-class setting needs the release's {' and '.join(absent)}",
                    "re-extract speech_commands_v0.02.tar.gz into this folder",
                )
        return RawSource(kind="files", root=root, files=files, dirs=dirs)

    def how_to_get(self) -> str:
        return (
            "download http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz and "
            "extract it into <data_dir>/speech_commands (the archive has no top-level folder)"
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        paths, labels = [], []
        for label, folder in enumerate(raw.dirs):  # label order = label_words()
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")
            if not files:
                raise data_error(folder, "no *.wav files", "re-extract the archive")
            paths += [str(p) for p in files]
            labels += [label] * len(files)
        pool = write_arrow(work / "pool.arrow", POOL_FEATURES, [{"path": paths, "labels": labels}])
        decoded = batched_map(
            pool,
            _decode_batch,
            features=Features(
                {
                    "inputs": List(Value("int16"), length=self.max_length),
                    "labels": Value("int64"),
                    "short": Value("bool"),
                }
            ),
            out_file=work / "decoded.arrow",
            num_proc=self.num_proc,
            desc="decode Speech Commands",
            batch_size=128,
            fn_kwargs={"length": self.max_length, "sample_rate": self.sample_rate},
        )
        short = column_numpy(decoded, "short")
        decoded = decoded.remove_columns("short")
        if self.classes == 35:  # official lists; short clips zero-padded, nothing dropped
            kept = np.arange(len(paths))
            parts = official_split(raw.root, paths)
            how, seed = "the release's validation_list.txt / testing_list.txt", None
            origin = (
                f"sorted <word>/*.wav of 35 words, short clips zero-padded to {self.max_length}"
            )
            dropped, notes = {}, {"padded_short_clips": int(short.sum())}
        else:
            kept = np.flatnonzero(~short)
            parts, how, seed = self._split(np.asarray(labels)[kept], raw.root)
            origin = f"sorted <word>/*.wav in label order, clips of {self.max_length} samples only"
            dropped, notes = {"short_clip": int(short.sum())}, {}
        splits, info = {}, {}
        for s, part in zip(("train", "val", "test"), parts, strict=True):
            rows = kept[np.sort(part)]
            splits[s] = decoded.select(rows)
            info[s] = indices_info(rows, seed, f"{how} of {origin}")
        if self.normalization == "s4":
            norm = s4_normalization(splits["train"])
        else:
            scale = 1 / 32768
            mean, std = audio_stats(splits["train"], scale)
            norm = {"kind": "global", "scale": scale, "mean": mean, "std": std}
        return Processed(
            splits=splits, split_info=info, dropped=dropped, normalization=norm, notes=notes
        )

    def _split(self, labels: np.ndarray, root: Path | None) -> tuple[list[np.ndarray], str, Any]:
        """(indices of train/val/test into ``labels``, description, seed(s)) for ``split``."""
        if self.split == "seeded":
            parts = stratified_split(labels, self.split_fractions, self.seed)
            pct = "/".join(f"{round(100 * f)}" for f in self.split_fractions)
            return parts, f"per-class seeded {pct} split (numpy)", self.seed
        try:
            parts = s4_split(labels)
        except ValueError as e:
            raise data_error(
                root or "speech_commands",
                f"{len(labels)} clips in {len(np.unique(labels))} classes are too few for S4's "
                f"stratified 70/15/15 split ({e})",
                "use the full Speech Commands release, or task.split=seeded",
            ) from None
        how = (
            "S4 split: sklearn train_test_split(train_size=0.7, random_state=0, stratified), "
            "rest halved (train_size=0.5, random_state=1, stratified), first half val"
        )
        return parts, how, [0, 1]
