"""Table 2's Speed and Mem columns as measured here: a benchmark report read back.

Table 2 gives, for training on Text at 4K, each model's speed and peak memory relative to XFM‡
(our model `transformer`): speed = t(XFM‡) / t(model), memory = peak(model) / peak(XFM‡), both
from the same report, so on the same device. Two reports hold such numbers:

- `bench_training.json` of `python -m mega_lra.bench_training --table2` (what Table 2 measures:
  one training step, forward + backward + optimiser, of each model's Text recipe through the
  Lightning module): rows with `experiment` = `lra/<model>/text`, `step_ms` and `step_peak_mib`
  (CUDA: the allocator's peak over the step; CPU: the worker's peak RSS over the step minus its
  RSS before the model was built);
- `bench.json` of `python -m mega_lra.bench` (the backbone's forward + backward alone): rows at
  L = 4096 with `train_ms` and `peak_mib`.

`read_bench(path)` takes either file (or the run dir holding it) and names the device as the
report does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE = "transformer"  # XFM‡: Table 2's Speed and Mem are relative to it
RATIO_LENGTH = 4096  # bench.json: the length of Table 2's comparison
REPORT_FILES = ("bench_training.json", "bench.json")


@dataclass(frozen=True)
class Measured:
    """Speed and Mem (x XFM‡) per model of one report, and what and where it measured."""

    path: Path
    device: str  # e.g. "NVIDIA H200, bfloat16" or "AMD EPYC, 2 threads, float32"
    what: str  # what a number is: the step timed, the length, the batch, the memory measure
    speed: dict[str, float]  # model -> t(XFM‡) / t(model)
    memory: dict[str, float]  # model -> peak(model) / peak(XFM‡)


def ratios(
    times: Mapping[str, float], peaks: Mapping[str, float], baseline: str = BASELINE
) -> tuple[dict[str, float], dict[str, float]]:
    """(speed, memory) of every model against `baseline` (absent: both empty)."""
    if baseline not in times:
        return {}, {}
    speed = {m: times[baseline] / t for m, t in times.items() if t > 0}
    base_peak = peaks.get(baseline)
    memory = {}
    if base_peak and base_peak > 0:
        memory = {m: p / base_peak for m, p in peaks.items()}
    return speed, memory


def table2_rows(rows: Sequence[Mapping[str, Any]], task: str = "text") -> dict[str, Any]:
    """model -> its measured row among training-step rows (`experiment` lra/<model>/<task>)."""
    out = {}
    for r in rows:
        parts = str(r.get("experiment", "")).split("/")
        if len(parts) == 3 and parts[0] == "lra" and parts[2] == task and "step_ms" in r:
            out[parts[1]] = r
    return out


def device_name(machine: Mapping[str, Any], dtype: str | None) -> str:
    """How a report's device is named: the card, else the CPU and its threads; and the dtype."""
    where = machine.get("gpu") or f"{machine.get('cpu', 'CPU')}, {machine.get('threads')} threads"
    return f"{where}, {dtype}" if dtype else str(where)


def read_bench(path: Path) -> Measured:
    """The Speed / Mem ratios of a benchmark report (a file of `REPORT_FILES` or a run dir
    holding one). ValueError naming the file when it holds no XFM‡ row to divide by."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in REPORT_FILES if (path / n).is_file()]
        if not found:
            raise ValueError(f"--bench {path}: no {' or '.join(REPORT_FILES)} in it")
        path = found[0]
    try:
        report = json.loads(path.read_text())
        machine, args, rows = report["machine"], report["args"], report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--bench {path}: not a benchmark report ({err!r})") from err
    device = device_name(machine, args.get("dtype"))
    if any("experiment" in r for r in rows):  # the training-step benchmark
        by_model = table2_rows(rows)
        times = {m: r["step_ms"] for m, r in by_model.items()}
        peaks = {m: r["step_peak_mib"] for m, r in by_model.items() if "step_peak_mib" in r}
        base = by_model.get(BASELINE, {})
        what = (
            f"one training step (forward + backward + optimiser) of the Text recipe, "
            f"L = {base.get('length', '?')}, batch {args.get('batch', '?')}; memory: "
            f"{base.get('memory_kind', 'peak')}"
        )
    else:  # the backbone benchmark
        done = [r for r in rows if r.get("length") == RATIO_LENGTH and "train_ms" in r]
        times = {r["model"]: r["train_ms"] for r in done}
        peaks = {r["model"]: r["peak_mib"] for r in done}
        kind = done[0].get("memory_kind", "peak") if done else "peak"
        what = (
            f"the backbone's forward + backward (no optimiser), L = {RATIO_LENGTH}, batch "
            f"{args.get('batch_size', '?')}, {args.get('size', 'text')} config; memory: {kind}"
        )
    speed, memory = ratios(times, peaks)
    if not speed:
        raise ValueError(
            f"--bench {path}: no measured XFM‡ row (model {BASELINE}) to take ratios against"
        )
    return Measured(path, device, what, speed, memory)
