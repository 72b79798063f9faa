"""Summarise a `tools/gpu/check.sh` run: merge the extra benchmark runs into `extra.json` and
write `summary.md` (stage exits, tests, the softmax kernels side by side at 4K, torch.compile,
Path-X, the GPU targets), printed last so that it ends the run's output."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mega_lra.bench import report


def _load(folder: Path) -> dict | None:
    path = folder / "bench.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _row(bench_run: dict | None, model: str, length: int) -> dict | None:
    if not bench_run:
        return None
    return report.cell(bench_run["rows"], model, length)


def _fmt(row: dict | None, key: str, fmt: str = "{:.1f}") -> str:
    return "" if row is None or key not in row else fmt.format(row[key])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--text", required=True, help="run dir of the LRA Text sweep")
    parser.add_argument("--status", default=None, help="file of 'stage exit N' lines")
    parser.add_argument("--extra", nargs="*", default=[], help="name=run_dir")
    ns = parser.parse_args(argv)

    out = Path(ns.out)
    text = _load(Path(ns.text))
    extra = {}
    for item in ns.extra:
        name, folder = item.split("=", 1)
        extra[name] = _load(Path(folder))
    (out / "extra.json").write_text(json.dumps(extra, indent=1) + "\n")

    lines = ["# GPU check summary", ""]
    machine = (text or next((r for r in extra.values() if r), None) or {}).get("machine", {})
    lines.append(
        f"card: {machine.get('gpu', '?')} ({machine.get('gpu_memory_gib', '?')} GiB), "
        f"torch {machine.get('torch', '?')}, CUDA {machine.get('cuda', '?')}, "
        f"git {str(machine.get('git_sha'))[:10]}"
    )
    if ns.status and Path(ns.status).is_file():
        lines += ["", "stages: " + "; ".join(Path(ns.status).read_text().split("\n")).strip("; ")]
    tests = out / "tests.txt"
    if tests.is_file():
        counts = [line for line in tests.read_text().splitlines() if line.startswith("tests")]
        failed = [line for line in tests.read_text().splitlines() if line.startswith("FAILED")]
        lines += ["", *counts, *failed]

    length = report.RATIO_LENGTH
    if text:
        lengths = sorted({r["length"] for r in text["rows"]})
        length = length if length in lengths else lengths[len(lengths) // 2]
    lines += [
        "",
        f"## Softmax kernels, LRA Text, L = {length}, fwd+bwd ms / peak MiB",
        "",
        "| run | Mega-chunk ms | Mega-chunk MiB | Mega ms | Mega MiB | compile s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    runs = [("auto (sweep)", text), *((k, extra.get(k)) for k in ("flex", "reference", "compile"))]
    for name, run in runs:
        if run is None:
            lines.append(f"| {name} | (no result) | | | | |")
            continue
        chunk, full = _row(run, "mega_chunk", length), _row(run, "mega", length)
        compile_s = [
            statistics.median(r["compile_s_all"])
            for r in (chunk, full)
            if r and r.get("compile_s_all")
        ]
        backend = run["args"].get("attention_backend") or "auto"
        lines.append(
            f"| {name} [{backend}] | {_fmt(chunk, 'train_ms')} | {_fmt(chunk, 'peak_mib')} | "
            f"{_fmt(full, 'train_ms')} | {_fmt(full, 'peak_mib')} | "
            f"{' / '.join(f'{c:.0f}' for c in compile_s)} |"
        )
        errors = [r.get("error") or r.get("skipped") for r in run["rows"] if "train_ms" not in r]
        lines += [f"|  note | {e} | | | | |" for e in errors if e]

    pathx = extra.get("pathx")
    if pathx:
        lines += ["", "## Path-X (laplace), batch {}".format(pathx["args"]["batch_size"]), ""]
        for r in pathx["rows"]:
            what = r.get("label") or r["model"]
            if "train_ms" in r:
                lines.append(
                    f"- {what}, L = {r['length']}: fwd+bwd {r['train_ms']:.1f} ms, "
                    f"peak {r['peak_mib'] / 1024:.2f} GiB"
                )
            else:
                lines.append(f"- {what}, L = {r['length']}: {r.get('error') or r.get('skipped')}")

    summary = dict(text["summary"]) if text else {}
    if pathx:
        summary.update({k: v for k, v in pathx["summary"].items() if k.startswith("pathx")})
    met = report.targets(summary)
    if met:
        lines += ["", "## GPU targets", "", "| target | result | met |", "|---|---|---|"]
        lines += [f"| {t} | {r} | {ok} |" for t, r, ok in met]
    if text:
        lines += ["", "## LRA Text sweep (text/bench.md)", ""]
        md = (Path(ns.text) / "bench.md").read_text().splitlines()
        lines += [line for line in md if line.startswith("|")]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
