"""Opt-in downloads and safe extraction of the raw archives (``python -m tasks.prepare ...
download=true``). Nothing here runs unless asked.

* Downloads stream to a temp file beside ``<data_dir>/.downloads/<file>`` and are renamed only
  after the size and checksum (where published) match, so an interrupted download is never
  mistaken for a finished one.
* Archives are untrusted: every member is checked before anything is written. Absolute paths,
  ``..`` components, symbolic and hard links, devices and FIFOs are refused (a `DataError`
  names the member). Extraction goes to a private ``.tmp-*`` folder; its top-level entries are
  renamed into ``data_dir`` only when the whole archive extracted, so a half-extracted folder
  never appears under its real name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from mega_lra.atomic_files import atomic_write
from tasks.errors import DataError
from tasks.storage import new_tmp_dir, remove_stale_tmp


@dataclass(frozen=True)
class Archive:
    """A published raw archive."""

    url: str
    filename: str
    md5: str | None  # published checksum (None: none published)
    size: int | None  # bytes (None: not published)
    subdir: str  # where under data_dir it is extracted ("" = data_dir itself)
    provides: str  # folder (relative to data_dir) whose presence means "already there"


LRA = Archive(
    url="https://storage.googleapis.com/long-range-arena/lra_release.gz",
    filename="lra_release.gz",
    md5=None,
    size=None,
    subdir="",
    provides="lra_release",
)
ARCHIVES: dict[str, Archive] = {
    "text": Archive(
        url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        filename="aclImdb_v1.tar.gz",
        md5="7c2ac02c03563afcf9b574c7e56c153a",
        size=84125825,
        subdir="",
        provides="aclImdb",
    ),
    "image": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        size=170498071,
        subdir="",
        provides="cifar-10-batches-py",
    ),
    "sc_raw": Archive(
        url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        filename="speech_commands_v0.02.tar.gz",
        md5=None,
        size=None,
        subdir="speech_commands",
        provides="speech_commands",
    ),
    "listops": LRA,
    "retrieval": LRA,
    "pathfinder": LRA,
    "pathx": LRA,
}


def download(
    url: str, dest: Path, md5: str | None, size: int | None, progress: bool = True
) -> Path:
    """Fetch ``url`` to ``dest`` through a temp file beside it; verify size and md5; rename
    when done (`mega_lra.atomic_files`)."""
    if dest.exists():
        return dest
    h = hashlib.md5()
    got = 0
    try:
        # a temp file beside dest, renamed over it only when the block ends without an error
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_write(dest, "wb") as out:
            total = size or int(resp.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress)
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
                got += len(block)
                bar.update(len(block))
            bar.close()
            if size is not None and got != size:
                raise DataError(
                    f"{url}: downloaded {got} bytes, expected {size}. Fix: retry (the transfer "
                    "was cut)"
                )
            if md5 is not None and h.hexdigest() != md5:
                raise DataError(
                    f"{url}: md5 {h.hexdigest()} does not match the published {md5}. Fix: "
                    "retry, or check that the URL still serves the original file"
                )
    except OSError as e:  # URLError is an OSError
        raise DataError(
            f"{url}: download failed ({e}). Fix: check the network, or download it by hand "
            f"and put it at {dest}"
        ) from e
    return dest


def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Raise a `DataError` unless ``member`` is a plain file or folder inside the target."""
    name = member.name
    path = PurePosixPath(name)
    why = None
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        why = "an absolute path"
    elif ".." in path.parts:
        why = "a '..' path component"
    elif member.issym() or member.islnk():
        why = f"a link (to {member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        why = "a device, FIFO or other special file"
    if why:
        raise DataError(
            f"{archive}: member {name!r} is {why}; refusing to extract an archive that writes "
            "outside its folder. Fix: download the archive again from the official URL"
        )


def safe_extract(
    archive: Path, target: Path, progress: bool = True, as_folder: str | None = None
) -> list[Path]:
    """Extract a (compressed) tar atomically; returns the new top-level paths.

    With ``as_folder``, the archive's contents become the new folder ``target/as_folder``
    (for archives without a top-level folder, like Speech Commands); otherwise its top-level
    entries are moved into ``target``.
    """
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(target)
    tmp = new_tmp_dir(target, "extract")
    try:
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for m in members:
                    check_member(archive, m)
                for m in tqdm(members, desc=f"extract {archive.name}", disable=not progress):
                    tar.extract(m, tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(
                f"{archive}: not a complete tar archive ({e}). Fix: delete it and download again"
            ) from e
        pairs = (
            [(tmp, target / as_folder)]
            if as_folder
            else [(e, target / e.name) for e in sorted(tmp.iterdir())]
        )
        for _, final in pairs:
            if final.exists():
                raise DataError(
                    f"{final}: already exists; not overwriting it with {archive.name}. Fix: "
                    "move it away first if you want a fresh copy"
                )
        for src, final in pairs:
            os.rename(src, final)
        return [final for _, final in pairs]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def archive_for(task_name: str) -> Archive | None:
    """The published archive of a task (``*_small`` demos share their full task's), or None."""
    return ARCHIVES.get(task_name.removesuffix("_small"))


def fetch(task_name: str, data_dir: Path, progress: bool = True) -> str:
    """Download + extract the archive a task needs, unless its folder is already there."""
    arc = archive_for(task_name)
    if arc is None:
        raise DataError(
            f"task {task_name!r}: no download is known. Fix: it uses the generator "
            "(task.source=generate) or its files must be placed by hand (see docs/data.md)"
        )
    if (data_dir / arc.provides).exists():
        return f"{data_dir / arc.provides} already present; nothing downloaded"
    path = download(arc.url, data_dir / ".downloads" / arc.filename, arc.md5, arc.size, progress)
    safe_extract(path, data_dir, progress, as_folder=arc.subdir or None)
    return f"downloaded {arc.url} and extracted it into {data_dir / arc.subdir}"
