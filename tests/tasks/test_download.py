"""Untrusted archives and interrupted downloads (tasks/download.py); all local, no network."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from tasks.download import download, safe_extract
from tasks.errors import DataError


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_extracts_a_clean_archive(tmp_path):
    arc = _tar(tmp_path / "ok.tar.gz", [_file("aclImdb/train/pos/0_9.txt", b"good")])
    out = safe_extract(arc, tmp_path / "data", progress=False)
    assert out == [tmp_path / "data" / "aclImdb"]
    assert (tmp_path / "data" / "aclImdb" / "train" / "pos" / "0_9.txt").read_bytes() == b"good"


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_file("/etc/evil"), "an absolute path"),
        (_file("data/../../evil"), "a '..' path component"),
    ],
)
def test_refuses_members_outside_the_target(tmp_path, member, why):
    arc = _tar(tmp_path / "bad.tar.gz", [_file("pkg/fine.txt"), member])
    with pytest.raises(DataError, match=why):
        safe_extract(arc, tmp_path / "data", progress=False)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_refuses_links(tmp_path, kind):
    link = tarfile.TarInfo("pkg/link")
    link.type = kind
    link.linkname = "/etc/passwd"
    arc = _tar(tmp_path / "link.tar.gz", [_file("pkg/a.txt"), (link, None)])
    with pytest.raises(DataError, match="a link"):
        safe_extract(arc, tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "pkg").exists()


def test_truncated_archive_leaves_no_folder_behind(tmp_path):
    arc = _tar(tmp_path / "full.tar.gz", [_file(f"pkg/f{i}.bin", bytes(5000)) for i in range(20)])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(arc.read_bytes()[:300])
    with pytest.raises(DataError, match="not a complete tar archive"):
        safe_extract(cut, tmp_path / "data", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_as_folder_extracts_into_a_new_folder_atomically(tmp_path):
    arc = _tar(tmp_path / "sc.tar.gz", [_file("yes/a.wav"), _file("no/b.wav")])
    safe_extract(arc, tmp_path / "data", progress=False, as_folder="speech_commands")
    assert sorted(p.name for p in (tmp_path / "data" / "speech_commands").iterdir()) == [
        "no",
        "yes",
    ]


def test_download_verifies_size_and_md5(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    url = src.as_uri()
    with pytest.raises(DataError, match="does not match the published"):
        download(url, tmp_path / "dl" / "a.bin", md5="0" * 32, size=None, progress=False)
    with pytest.raises(DataError, match=r"downloaded 700 bytes, expected 1\."):
        download(url, tmp_path / "dl" / "a.bin", md5=None, size=1, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []  # no .part, no final file
    got = download(url, tmp_path / "dl" / "a.bin", md5=md5, size=700, progress=False)
    assert got.read_bytes() == src.read_bytes()


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="download failed"):
        download((tmp_path / "nope").as_uri(), tmp_path / "a.bin", None, None, progress=False)
