"""The reference environment: a separate virtual env with the real `transformers==4.41.2` Mega.

`transformers` 4.x cannot be installed beside the project's own dependencies (``datasets`` 5), and
v5 deleted Mega, so the reference model lives in its own virtual environment under
``<repo>/.cache/hf-reference-4.41.2`` and is only ever reached through a subprocess. This module
is standard library only: importing it never imports torch or transformers. It is development
tooling, not part of the installed package: import it from the repository root as
``tools.hf_reference.envs``.

- :func:`ensure_env` returns the reference env's python, building the env on first use (about a
  minute: ``torch==2.13.0`` from the local CPU wheel, then the pinned ``transformers`` stack).
  The build is guarded by a file lock (safe under pytest-xdist) and is trusted only once its
  completion stamp, written last, matches the pinned requirements.
- :func:`run_reference` runs one of the scripts in ``tools/hf_reference/`` with that python and
  raises :class:`HFReferenceError` with the script's stderr when it fails.

A second env, :data:`TRANSFORMERS_V5` (``<repo>/.cache/hf-transformers-5.24.0``: transformers
v5, which has no Mega, plus accelerate for its ``Trainer``), is where ``mega_lra.hf_auto``'s
registration with the Auto classes is exercised; the project is put on its ``PYTHONPATH`` by
:func:`run_in_env`, not installed into it. Both envs share the build, lock and stamp logic: pass
``spec=TRANSFORMERS_V5`` to :func:`ensure_env`.

Command line: ``python tools/hf_reference/envs.py [--rebuild] [--env reference|transformers-v5]``
builds (or checks) an env and prints its python.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TRANSFORMERS_VERSION = "4.41.2"
ENV_NAME = f"hf-reference-{TRANSFORMERS_VERSION}"

# Installed in this order; torch alone first so pip takes the local CPU wheel (an unpinned torch
# would pull a multi-GB CUDA build). Everything else is pinned too, so re-building the env gives
# the same numbers. numpy 1.26: transformers 4.41 predates numpy 2.
TORCH_REQUIREMENT = "torch==2.13.0"
REQUIREMENTS: tuple[str, ...] = (
    f"transformers=={TRANSFORMERS_VERSION}",
    "numpy==1.26.4",
    "safetensors==0.4.3",
    "tokenizers==0.19.1",
    "huggingface-hub==0.23.4",
    "pyyaml==6.0.2",
    "regex==2024.11.6",
    "requests==2.32.3",
    "tqdm==4.67.1",
    "packaging==24.2",
)
# Imported by the env check after the build; all must succeed for the env to count as complete.
_PROBE = (
    "import torch, transformers, safetensors, numpy; "
    "from transformers import MegaConfig, MegaModel; "
    "print(transformers.__version__, torch.__version__, numpy.__version__)"
)


@dataclass(frozen=True)
class EnvSpec:
    """A cached virtual env: its folder name under ``.cache/``, what pip installs (torch first,
    alone, so the local CPU wheel is taken), and the import check that must pass after."""

    name: str
    torch: str
    requirements: tuple[str, ...]
    probe: str
    what: str


def reference_spec() -> EnvSpec:
    """The transformers-4.41.2 reference env (read from the module constants at call time)."""
    return EnvSpec(
        ENV_NAME, TORCH_REQUIREMENT, REQUIREMENTS, _PROBE, f"transformers-{TRANSFORMERS_VERSION}"
    )


TRANSFORMERS_V5_VERSION = "5.24.0"
# transformers v5 (no Mega) with the huggingface_hub >= 1 that datasets 5 also uses, and
# accelerate, which v5's Trainer needs. Pinned so a rebuild gives the same env.
TRANSFORMERS_V5 = EnvSpec(
    name=f"hf-transformers-{TRANSFORMERS_V5_VERSION}",
    torch=TORCH_REQUIREMENT,
    requirements=(
        f"transformers=={TRANSFORMERS_V5_VERSION}",
        "accelerate==1.15.0",
        "tokenizers==0.23.3",
        "huggingface-hub==2.4.0",
        "safetensors==0.8.0",
        "numpy==2.4.6",
    ),
    probe=(
        "import torch, transformers, accelerate, tokenizers, safetensors; "
        "assert int(transformers.__version__.split('.')[0]) >= 5, transformers.__version__; "
        "print(transformers.__version__, torch.__version__)"
    ),
    what=f"transformers-{TRANSFORMERS_V5_VERSION}",
)

STAMP_NAME = ".mega-lra-complete.json"
_PIP_TAIL_LINES = 40


class HFReferenceError(RuntimeError):
    """The reference env could not be built, or a reference script failed."""


def repo_root() -> Path:
    """The repository root (the folder holding ``mega_lra/`` and ``tools/``)."""
    return Path(__file__).resolve().parents[2]


def env_dir(root: Path | str | None = None, spec: EnvSpec | None = None) -> Path:
    """Where an env lives: ``<root>/.cache/hf-reference-4.41.2`` for the reference env."""
    return Path(root or repo_root()) / ".cache" / (spec or reference_spec()).name


def env_python(root: Path | str | None = None, spec: EnvSpec | None = None) -> Path:
    return env_dir(root, spec) / "bin" / "python"


def scripts_dir(root: Path | str | None = None) -> Path:
    return Path(root or repo_root()) / "tools" / "hf_reference"


def _stamp_content(spec: EnvSpec | None = None) -> dict:
    if spec is None:
        return {
            "transformers": TRANSFORMERS_VERSION,
            "torch": TORCH_REQUIREMENT,
            "requirements": list(REQUIREMENTS),
            "base_python": f"{sys.version_info.major}.{sys.version_info.minor}",
        }
    return {
        "env": spec.what,
        "torch": spec.torch,
        "requirements": list(spec.requirements),
        "base_python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def _is_complete(path: Path, spec: EnvSpec | None = None) -> bool:
    stamp = path / STAMP_NAME
    if not (stamp.is_file() and (path / "bin" / "python").exists()):
        return False
    try:
        expected = _stamp_content() if spec is None else _stamp_content(spec)
        return json.loads(stamp.read_text()) == expected
    except (OSError, ValueError):
        return False


def base_python() -> str:
    """A python outside any virtual env, also when called from inside the project's ``.venv``.

    ``sys.base_prefix`` is the interpreter the current venv (if any) was made from; failing that,
    the first ``python3`` on PATH that is not inside a virtual env.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin"
    for name in (f"python{version}", "python3", "python"):
        if (base / name).is_file() and os.access(base / name, os.X_OK):
            return str(base / name)
    venv = os.environ.get("VIRTUAL_ENV")
    path = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p
        and not (venv and Path(p).resolve().is_relative_to(Path(venv).resolve()))
        and Path(p).resolve() != Path(sys.prefix, "bin").resolve()
    )
    found = shutil.which("python3", path=path)
    if not found:
        raise HFReferenceError(
            "no system python3 found to build the reference env "
            f"(looked in {base} and on PATH outside the virtual env)"
        )
    return found


def _log(msg: str) -> None:
    print(f"[hf-reference] {msg}", file=sys.stderr, flush=True)


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would leak the main venv into the child."""
    env = dict(os.environ)
    for key in (
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "PYTHONSTARTUP",
        "PIP_REQUIRE_VIRTUALENV",
    ):
        env.pop(key, None)
    return env


def _run_step(cmd: Sequence[str], what: str, path: Path, env_what: str | None = None) -> None:
    _log(f"{what} ...")
    start = time.monotonic()
    proc = subprocess.run(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env()
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-_PIP_TAIL_LINES:])
        raise HFReferenceError(
            f"building the {env_what or 'transformers-' + TRANSFORMERS_VERSION} env failed at: "
            f"{what}\n"
            f"command: {' '.join(cmd)} (exit {proc.returncode})\n"
            f"--- last {_PIP_TAIL_LINES} lines of its output ---\n{tail}\n---\n"
            f"The half-built env at {path} is not trusted (no completion stamp) and is removed on "
            "the next try. Retry with `python tools/hf_reference/envs.py --rebuild` (add "
            "`--env transformers-v5` for that env); it needs the PyPI registry for "
            "transformers and its dependencies."
        )
    _log(f"{what}: done in {time.monotonic() - start:.0f}s")


def _build(path: Path, spec: EnvSpec | None = None) -> None:
    spec = spec or reference_spec()
    start = time.monotonic()
    if path.exists():
        _log(f"removing incomplete or outdated env at {path} (many small files: can be slow)")
        shutil.rmtree(path)
        _log(f"removed in {time.monotonic() - start:.0f}s")
        start = time.monotonic()
    py = base_python()
    _log(f"building {path} from {py} (takes about a minute)")
    _run_step([py, "-m", "venv", str(path)], "python -m venv", path, spec.what)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--no-input"]
    pip += ["--disable-pip-version-check"]
    _run_step([*pip, spec.torch], f"pip install {spec.torch}", path, spec.what)
    _run_step(
        [*pip, *spec.requirements], f"pip install {' '.join(spec.requirements)}", path, spec.what
    )
    _run_step([str(path / "bin" / "python"), "-c", spec.probe], "import check", path, spec.what)
    # Written last: only an env with this stamp is ever used.
    stamp = _stamp_content() if spec.name == ENV_NAME else _stamp_content(spec)
    (path / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
    _log(f"{spec.what} env ready in {time.monotonic() - start:.0f}s: {path}")


def ensure_env(
    root: Path | str | None = None, *, rebuild: bool = False, spec: EnvSpec | None = None
) -> Path:
    """Return an env's python (default: the reference env), building the env first if it is
    missing or incomplete.

    ``root`` is the repository root (default: the one holding this file). Concurrent callers
    (pytest-xdist workers, parallel ``make`` jobs) serialise on a lock file next to the env; the
    first builds, the others wait and then reuse it. ``rebuild=True`` deletes and rebuilds it.
    """
    path = env_dir(root, spec)
    if not rebuild and _is_complete(path, spec):
        return path / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f"{path.name}.lock"
    with open(lock_path, "w") as lock:
        if not rebuild:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _log(f"another process is building {path.name}; waiting on {lock_path}")
                fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Checked again under the lock: another process may have finished it meanwhile.
            if rebuild or not _is_complete(path, spec):
                if spec is None:
                    _build(path)
                else:
                    _build(path, spec)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path / "bin" / "python"


def run_in_env(
    spec: EnvSpec,
    cmd: Sequence[str],
    *,
    root: Path | str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python <cmd...>`` in the env of ``spec`` (built first if needed), offline, with the
    repository root on ``PYTHONPATH`` so ``import mega_lra`` is this checkout. Output is captured
    as text; the caller checks the return code."""
    python = ensure_env(root, spec=spec)
    child_env = _clean_env()
    child_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    child_env["PYTHONPATH"] = str(Path(root or repo_root()))
    child_env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if env:
        child_env.update(env)
    full = [str(python), *map(str, cmd)]
    try:
        return subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, env=child_env, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise HFReferenceError(f"command timed out after {timeout}s: {full}") from err


def run_reference(
    args: Sequence[str],
    *,
    root: Path | str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``tools/hf_reference/<args[0]>`` with the reference env's python.

    ``args[0]`` is a script name (``"run_model.py"``; the ``.py`` may be left off), the rest its
    arguments. stdout and stderr are captured as text. The env is built first if needed. With
    ``check=True`` a non-zero exit raises :class:`HFReferenceError` carrying the stderr.
    """
    if not args:
        raise ValueError("run_reference needs a script name, e.g. ['run_model.py', ...]")
    script_name = args[0] if args[0].endswith(".py") else f"{args[0]}.py"
    script = scripts_dir(root) / script_name
    if not script.is_file():
        available = sorted(p.name for p in scripts_dir(root).glob("*.py") if p.name[0] != "_")
        raise HFReferenceError(f"no reference script {script}; available: {available}")
    python = ensure_env(root)
    child_env = _clean_env()
    child_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    child_env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if env:
        child_env.update(env)
    cmd = [str(python), str(script), *map(str, args[1:])]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=child_env, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise HFReferenceError(f"reference script timed out after {timeout}s: {cmd}") from err
    if check and proc.returncode != 0:
        raise HFReferenceError(
            f"reference script {script_name} failed (exit {proc.returncode})\n"
            f"command: {' '.join(cmd)}\n--- stderr ---\n{proc.stderr.strip()}\n"
            f"--- stdout (last 2000 chars) ---\n{proc.stdout[-2000:]}"
        )
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="delete and rebuild the env")
    parser.add_argument("--root", default=None, help="repository root (default: this checkout)")
    parser.add_argument(
        "--env",
        choices=("reference", "transformers-v5"),
        default="reference",
        help="which env: the transformers-4.41.2 reference (default) or transformers v5",
    )
    ns = parser.parse_args(argv)
    spec = TRANSFORMERS_V5 if ns.env == "transformers-v5" else None
    try:
        print(ensure_env(ns.root, rebuild=ns.rebuild, spec=spec))
    except HFReferenceError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
