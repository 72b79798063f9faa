"""What both benchmarks share: one case measured in a fresh process, and the machine it ran on.

A case is a JSON object; `run_in_worker("speed", case)` runs
`python -m mega_lra.bench.worker speed CASE` (`mega_lra.bench.speed.run_case(case)` in a new
interpreter, so that its peak RSS is the case's own and a crash or an out-of-memory kill costs one
row) and returns the result the worker prints as its last line. Also here: the process's current
and peak RSS, the CPU's name, the machine record of a report, and the run dir that never
overwrites an earlier report.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
# the benchmarks whose `run_case` a worker can run (modules of this package)
KINDS = ("speed", "train_step")


def current_rss() -> int:
    """This process's resident set size now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "CPU"


def machine(device: str, threads: int) -> dict[str, Any]:
    """The machine of a report: CPU, threads, torch, python, the card (CUDA), the commit."""
    import torch

    from mega_lra.training.run_dir import git_sha

    info: dict[str, Any] = dict(
        device=device,
        cpu=cpu_name(),
        cpu_count=os.cpu_count(),
        threads=threads,
        torch=torch.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
    )
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    info["git_sha"] = git_sha()
    return info


def run_dir(out: str | None, default_root: str, names: tuple[str, ...]) -> Path:
    """The report's folder (`out`, else `runs/<default_root>/<timestamp>`), created; refuses one
    that already holds any of `names` (an earlier report is never overwritten)."""
    path = Path(out or Path("runs") / default_root / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (path / name).exists():
            raise FileExistsError(f"--out {path}: {name} already exists; choose another run dir")
    return path


def run_in_worker(kind: str, case: dict[str, Any]) -> dict[str, Any]:
    """`mega_lra.bench.<kind>.run_case(case)` in a fresh process; RuntimeError with the last line
    of its stderr (and the likely cause when it was killed) when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "mega_lra.bench.worker", kind, json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if proc.returncode < 0 or "MemoryError" in proc.stderr or "out of memory" in proc.stderr:
            tail = f"out of memory or killed (exit {proc.returncode}): {tail}"
        raise RuntimeError(tail)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in KINDS:
        print(f"usage: python -m mega_lra.bench.worker {{{','.join(KINDS)}}} CASE_JSON")
        return 2
    module = importlib.import_module(f"mega_lra.bench.{args[0]}")
    print(json.dumps(module.run_case(json.loads(args[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
