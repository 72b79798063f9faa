"""SC-Raw: WAVs via soundfile, short clips dropped, bad files named, stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tasks.collate import Collator
from tasks.errors import DataError
from tasks.sc_raw import SC10_WORDS, SCRawTask
from tests.tasks.conftest import paths_for, write_speech


def test_counts_drops_short_clips_and_stratifies(data_dir):
    write_speech(data_dir / "speech_commands", per_word=21, short=1)
    task = SCRawTask(num_proc=1)
    built = task.build(paths_for(data_dir), progress=False)
    rep = built.report()
    assert rep["dropped"] == {"short_clip": 10}
    for split, n in (("train", 14), ("val", 3), ("test", 3)):
        assert rep["splits"][split]["labels"] == {str(c): n for c in range(10)}
    assert len(built.dataset["train"][0]["inputs"]) == 16000


def test_audio_is_normalised_with_train_statistics(data_dir):
    write_speech(data_dir / "speech_commands", per_word=6)
    built = SCRawTask(num_proc=1).build(paths_for(data_dir), progress=False)
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
    write_speech(data_dir / "speech_commands", per_word=10)
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
