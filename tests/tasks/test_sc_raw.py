"""SC-Raw: WAVs via soundfile, short clips dropped, bad files named, S4 and seeded splits,
S4's per-time-step normalisation, the words guard and the prepare CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.model_selection import train_test_split

from tasks.collate import Collator
from tasks.errors import DataError
from tasks.prepare import load_task, main
from tasks.sc_raw import SC10_WORDS, SCRawTask, s4_split
from tests.tasks.conftest import paths_for, write_speech, write_speech35

REPO = Path(__file__).resolve().parents[2]
# The paper's class order (gpu_and_speech_facts.md section 3): labels 0..9.
PAPER_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def _pool(root: Path) -> tuple[list[Path], np.ndarray]:
    """Every WAV in label order, sorted by name within a word, and its label."""
    files, labels = [], []
    for label, word in enumerate(PAPER_WORDS):
        names = sorted((root / word).glob("*.wav"))
        files += names
        labels += [label] * len(names)
    return files, np.asarray(labels)


def test_seeded_split_counts_drops_short_clips_and_stratifies(data_dir):
    write_speech(data_dir / "speech_commands", per_word=21, short=1)
    task = SCRawTask(num_proc=1, split="seeded")
    built = task.build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert rep["dropped"] == {"short_clip": 10}
    for split, n in (("train", 14), ("val", 3), ("test", 3)):
        assert rep["splits"][split]["labels"] == {str(c): n for c in range(10)}
    assert len(built.dataset["train"][0]["inputs"]) == 16000


def test_global_normalisation_uses_train_statistics(data_dir):
    write_speech(data_dir / "speech_commands", per_word=6)
    task = SCRawTask(num_proc=1, split="seeded", normalization="global")
    built = task.build(paths_for(data_dir), progress=False)
    norm = built.manifest["normalization"]
    x = np.asarray(built.dataset["train"]["inputs"], dtype=np.float64) / 32768
    assert norm["mean"] == pytest.approx(x.mean(), abs=1e-9)
    assert norm["std"] == pytest.approx(x.std(), rel=1e-6)
    batch = Collator.for_task(SCRawTask(), built.manifest, 0)(
        [built.dataset["train"][i] for i in range(4)]
    )
    assert batch["inputs"].shape == (4, 16000)
    wav = sorted((data_dir / "speech_commands").glob("*/*.wav"))
    assert wav  # the collated first row equals the normalised file contents
    first = np.asarray(built.dataset["train"][0]["inputs"]) / 32768
    assert np.allclose(batch["inputs"][0].numpy(), (first - norm["mean"]) / norm["std"], atol=1e-5)


def test_split_is_deterministic(data_dir):
    write_speech(data_dir / "speech_commands", per_word=12)
    a = SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)
    b = SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False, rebuild=True)
    assert a.manifest["splits"]["test"]["indices"] == b.manifest["splits"]["test"]["indices"]


def test_corrupt_wav_is_named(data_dir):
    root = write_speech(data_dir / "speech_commands", per_word=4)
    bad = root / "left" / "deadbeef_nohash_0.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DataError, match=r"deadbeef_nohash_0.wav: not a readable WAV"):
        SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_long_clip_and_wrong_rate_are_named(data_dir):
    root = write_speech(data_dir / "speech_commands", per_word=4)
    sf.write(root / "go" / "zz_long.wav", np.zeros(17000, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"zz_long.wav: 17000 samples, expected at most 16000"):
        SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)
    (root / "go" / "zz_long.wav").unlink()
    sf.write(root / "go" / "zz_rate.wav", np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"zz_rate.wav: sample rate 8000 Hz, expected 16000"):
        SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_missing_word_folder_is_named(data_dir):
    root = write_speech(data_dir / "speech_commands", per_word=2)
    for f in (root / "stop").iterdir():
        f.unlink()
    (root / "stop").rmdir()
    with pytest.raises(DataError, match="lacks the word folders stop"):
        SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_missing_data_lists_searched_paths(data_dir):
    with pytest.raises(DataError) as err:
        SCRawTask().build(paths_for(data_dir), progress=False)
    assert str(data_dir / "speech_commands") in str(err.value)
    assert "speech_commands_v0.02.tar.gz" in str(err.value)
    assert SC10_WORDS[:2] == ["yes", "no"]


def test_s4_split_of_the_full_release_label_vector_is_24482_5246_5247():
    rng = np.random.default_rng(0)
    counts = rng.integers(3300, 3700, size=10)
    counts[-1] = 34975 - counts[:-1].sum()  # 34,975 clips of exactly 16000 samples
    labels = np.repeat(np.arange(10), counts)
    train, val, test = s4_split(labels)
    assert (len(train), len(val), len(test)) == (24482, 5246, 5247)
    together = np.concatenate([train, val, test])
    assert np.array_equal(np.sort(together), np.arange(34975))  # a partition
    for part, frac in ((train, 0.7), (val, 0.15), (test, 0.15)):
        per_class = np.bincount(labels[part], minlength=10)
        assert np.all(np.abs(per_class - frac * counts) <= 1.5)  # stratified


def test_s4_split_is_sklearns_on_the_sorted_listing(data_dir):
    root = write_speech(data_dir / "speech_commands", per_word=12, short=1)
    built = load_task("sc_raw", ["task.num_proc=1"]).build(paths_for(data_dir), progress=False)
    # Independent: list and filter the files, then call sklearn exactly as S4 did.
    files, labels = _pool(root)
    kept = np.asarray([i for i, f in enumerate(files) if sf.info(f).frames == 16000])
    y = labels[kept]
    tr, rest, _, y_rest = train_test_split(
        np.arange(len(y)), y, train_size=0.7, random_state=0, shuffle=True, stratify=y
    )
    va, te = train_test_split(rest, train_size=0.5, random_state=1, shuffle=True, stratify=y_rest)
    m = built.manifest
    for split, part in (("train", tr), ("val", va), ("test", te)):
        assert m["splits"][split]["indices"] == sorted(kept[part].tolist())
        assert m["splits"][split]["seed"] == [0, 1]
    assert built.report()["dropped"] == {"short_clip": 10}
    assert m["params"]["split"] == "s4" and "seed" not in m["params"]
    # Row j of a split holds the samples of pool file indices[j], label = its word.
    j = 3
    pool_index = m["splits"]["val"]["indices"][j]
    samples, _ = sf.read(files[pool_index], dtype="int16")
    row = built.dataset["val"][j]
    assert row["inputs"] == samples.tolist() and row["labels"] == labels[pool_index]


def test_s4_normalisation_is_per_time_step_as_s4_computed_it(data_dir):
    write_speech(data_dir / "speech_commands", per_word=12)
    task = load_task("sc_raw", ["task.num_proc=1"])
    assert task.normalization == "s4"
    built = task.build(paths_for(data_dir), progress=False)
    train = np.asarray(built.dataset["train"]["inputs"], dtype=np.int16)
    # S4: torchaudio.load gives int16 / 2**15 as float32, then the loader divides by 2**15 again;
    # each time step is standardised with its train mean and unbiased std + 1e-5 (float32).
    x = torch.from_numpy(train).float() / 32768 / 2**15
    expected = (x - x.mean(0)) / (x.std(0) + 1e-5)
    collate = Collator.for_task(task, built.manifest, pad_to_multiple_of=0)
    batch = collate([built.dataset["train"][i] for i in range(5)])
    assert batch["inputs"].shape == (5, 16000)
    assert torch.allclose(batch["inputs"], expected[:5], rtol=1e-4, atol=1e-5)
    # At this scale the 1e-5 dominates: the model sees inputs far from unit variance.
    reached = expected.std(0)
    norm = built.manifest["normalization"]
    assert norm["normalised_std"]["mean"] == pytest.approx(float(reached.mean()), rel=1e-3)
    assert norm["normalised_std"]["max"] < 0.5


def test_seeded_split_and_global_normalisation_are_options(data_dir):
    write_speech(data_dir / "speech_commands", per_word=20)
    task = load_task(
        "sc_raw", ["task.num_proc=1", "task.split=seeded", "task.normalization=global"]
    )
    built = task.build(paths_for(data_dir), progress=False)
    m = built.manifest
    assert m["params"]["split"] == "seeded" and m["params"]["seed"] == 42
    assert [m["splits"][s]["rows"] for s in ("train", "val", "test")] == [140, 30, 30]
    assert m["normalization"]["kind"] == "global"
    default = load_task("sc_raw", ["task.num_proc=1"]).build(paths_for(data_dir), progress=False)
    assert default.manifest_sha256 != built.manifest_sha256


def test_split_fractions_apply_only_to_the_seeded_split():
    with pytest.raises(DataError, match=r"task.split_fractions.*only to task.split=seeded"):
        SCRawTask(split_fractions=[0.8, 0.1, 0.1])
    assert SCRawTask(split="seeded", split_fractions=[0.8, 0.1, 0.1]).split == "seeded"
    with pytest.raises(DataError, match="task.split: 'random' is not valid"):
        SCRawTask(split="random")
    with pytest.raises(DataError, match="task.normalization: 'unit' is not valid"):
        SCRawTask(normalization="unit")


def test_too_few_clips_for_the_s4_split_is_a_clear_error(data_dir):
    write_speech(data_dir / "speech_commands", per_word=3)
    with pytest.raises(DataError, match=r"30 clips in 10 classes are too few.*task.split=seeded"):
        SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)


def test_non_string_words_are_refused_naming_task_words(data_dir, capsys):
    words = [True, False, *SC10_WORDS[2:]]
    with pytest.raises(DataError, match=r"task.words.*entry 0 is True \(bool\).*quote"):
        SCRawTask(words=words)
    write_speech(data_dir / "speech_commands", per_word=2)
    rc = main(
        [
            "task=sc_raw",
            f"paths.data_dir={data_dir}",
            "task.words=[true,false,up,down,left,right,on,off,stop,go]",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "task.words" in err and "entry 0 is True" in err
    assert "Traceback" not in err


def test_prepare_cli_subprocess_on_a_speech_commands_folder(data_dir):
    write_speech(data_dir / "speech_commands", per_word=10, short=1)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.prepare",
            "task=sc_raw",
            f"paths.data_dir={data_dir}",
            "task.num_proc=1",
            "progress=false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["task"] == "sc_raw" and report["source"] == "files"
    assert report["dropped"] == {"short_clip": 10}
    rows = {s: report["splits"][s]["rows"] for s in ("train", "val", "test")}
    assert sum(rows.values()) == 90
    for s in rows:  # every word in every split, 9 kept clips per word in all
        assert set(report["splits"][s]["labels"]) == {str(c) for c in range(10)}
        assert min(report["splits"][s]["labels"].values()) >= 1
    manifest = json.loads(Path(report["manifest"]).read_text())
    assert manifest["params"]["words"] == PAPER_WORDS
    assert manifest["params"]["split"] == "s4"


def test_35_classes_use_the_official_lists_and_pad_short_clips(data_dir):
    root = write_speech35(data_dir / "speech_commands", per_word=4)
    task = load_task("sc_raw", ["task.num_proc=1", "task.classes=35"])
    assert task.num_classes == 35  # follows task.classes in the YAML
    built = task.build(paths_for(data_dir), progress=False)
    rep, m = built.report(), built.manifest
    assert rep["dropped"] == {} and m["notes"] == {"padded_short_clips": 35}
    # Independent: the pool is the 35 folders in S4's order, files sorted; lists decide.
    words = task.label_words()
    assert (words[0], words[16], words[34]) == ("bed", "yes", "zero")
    files = [f for w in words for f in sorted((root / w).glob("*.wav"))]
    val = set((root / "validation_list.txt").read_text().split())
    test = set((root / "testing_list.txt").read_text().split())
    keys = [f"{f.parent.name}/{f.name}" for f in files]
    expected = {
        "val": [i for i, k in enumerate(keys) if k in val],
        "test": [i for i, k in enumerate(keys) if k in test and k not in val],
        "train": [i for i, k in enumerate(keys) if k not in val and k not in test],
    }
    for split, members in expected.items():
        assert m["splits"][split]["indices"] == members
        assert rep["splits"][split]["labels"] == {str(c): len(members) // 35 for c in range(35)}
    short = expected["train"][0]  # clip 0 of "bed": 12000 samples, zero-padded
    samples, _ = sf.read(files[short], dtype="int16")
    assert len(samples) == 12000
    row = built.dataset["train"][0]
    assert row["inputs"] == samples.tolist() + [0] * 4000 and row["labels"] == 0


def test_35_classes_refuse_10_class_settings_and_need_the_lists(data_dir):
    with pytest.raises(DataError, match="task.num_classes: 10 differs from task.classes=35"):
        SCRawTask(classes=35)
    with pytest.raises(DataError, match="task.words: applies to the 10-class setting only"):
        SCRawTask(classes=35, num_classes=35, words=[*SC10_WORDS[1:], "zero"])
    with pytest.raises(DataError, match="task.classes: 20 is not valid"):
        SCRawTask(classes=20, num_classes=20)
    root = write_speech35(data_dir / "speech_commands", per_word=3)
    (root / "testing_list.txt").unlink()
    task = SCRawTask(classes=35, num_classes=35, num_proc=1)
    with pytest.raises(DataError, match="needs the release's testing_list.txt"):
        task.build(paths_for(data_dir), progress=False)
    (root / "testing_list.txt").write_text("cat/00000002_nohash_0.wav\nnot a path\n")
    with pytest.raises(DataError, match=r"testing_list.txt:2: expected a <word>/<file>.wav entry"):
        task.build(paths_for(data_dir), progress=False)
