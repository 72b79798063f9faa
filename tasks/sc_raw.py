"""SC-Raw (Speech Commands v0.02, 10 words): raw 16 kHz waveforms of 16000 samples, 10 classes.

Raw layout: ``speech_commands/<word>/*.wav`` (the v0.02 archive extracted into that folder; S4's
``SpeechCommands/speech_commands_v0.02/`` and a bare ``speech_commands_v0.02/`` are searched
too). Classes, in label order: yes no up down left right on off stop go. WAVs are read with
``soundfile`` (no FFmpeg), files in sorted order (not ``os.listdir`` order, whose randomness
the paper blames for S4's split).

As in S4/Mega, clips shorter than 16000 samples are dropped (counted as ``short_clip``; v0.02
keeps 34,975). A longer clip, another sample rate, several channels or an unreadable file is a
`DataError` naming the file.

Splits: 70/15/15 stratified by class, seeded (per class, a ``numpy.random.default_rng(seed)``
permutation; first 70% train, next 15% val, rest test). Samples are cached as int16; the
collator applies ``(x / 32768 - mean) / std`` with mean/std of the train split (in the manifest).
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
        if data.shape[0] < length:
            short[i] = True
        else:
            audio[i] = data[:, 0]
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


def audio_stats(ds, scale: float, chunk: int = 512) -> tuple[float, float]:
    """Mean and std of ``inputs * scale`` over all samples of ``ds`` (float64 sums)."""
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
    words: list[str] = field(default_factory=lambda: list(SC10_WORDS))
    sample_rate: int = 16000
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 42

    NUM_CLASSES: ClassVar[int] = 10
    ALLOWED_KINDS: ClassVar[tuple[str, ...]] = ("audio",)

    def __post_init__(self) -> None:
        self.words = [str(w) for w in self.words]
        self.split_fractions = [float(x) for x in self.split_fractions]
        super().__post_init__()
        if len(self.words) != self.num_classes or len(set(self.words)) != len(self.words):
            raise data_error(
                "task.words", f"{self.words} must be {self.num_classes} distinct words", "fix it"
            )
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise data_error(
                "task.split_fractions",
                f"{self.split_fractions} must be 3 fractions summing to 1",
                "use e.g. [0.7,0.15,0.15]",
            )
        if self.vocab_size is not None:
            raise data_error("task.vocab_size", "audio has no vocabulary", "set it to null")

    def search_roots(self, data_dir: Path) -> list[Path]:
        return [
            data_dir / "speech_commands",
            data_dir / "SpeechCommands" / "speech_commands_v0.02",
            data_dir / "speech_commands_v0.02",
        ]

    def files_at(self, root: Path) -> RawSource | None:
        if not root.is_dir():
            return None
        dirs = [root / w for w in self.words]
        missing = [d.name for d in dirs if not d.is_dir()]
        if len(missing) == len(dirs):
            return None
        if missing:
            raise data_error(
                root,
                f"Speech Commands folder lacks the word folders {', '.join(missing)}",
                "re-extract speech_commands_v0.02.tar.gz into this folder",
            )
        return RawSource(kind="files", root=root, dirs=dirs)

    def how_to_get(self) -> str:
        return (
            "download http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz and "
            "extract it into <data_dir>/speech_commands (python -m tasks.prepare task=sc_raw "
            "download=true does both)"
        )

    def process(self, raw: RawSource, work: Path, progress: bool) -> Processed:
        paths, labels = [], []
        for label, folder in enumerate(raw.dirs):
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
        kept = np.flatnonzero(~short)
        decoded = decoded.remove_columns("short")
        all_labels = np.asarray(labels)[kept]
        parts = stratified_split(all_labels, self.split_fractions, self.seed)
        splits, info = {}, {}
        origin = "sorted <word>/*.wav in label order, clips < 16000 samples removed"
        for s, part in zip(("train", "val", "test"), parts, strict=True):
            rows = kept[part]
            splits[s] = decoded.select(rows)
            info[s] = indices_info(rows, self.seed, f"stratified 70/15/15 of {origin}")
        scale = 1 / 32768
        mean, std = audio_stats(splits["train"], scale)
        return Processed(
            splits=splits,
            split_info=info,
            dropped={"short_clip": int(short.sum())},
            normalization={"scale": scale, "mean": mean, "std": std},
        )
