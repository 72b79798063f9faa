"""Figures from run dirs (`python -m mega_lra.plot ...`): PNG files, matplotlib's Agg backend.

    python -m mega_lra.plot ablation RUNS_DIR [RUNS_DIR ...] [--out FILE.png] [--force]
        Figure 4: accuracy vs attention chunk size (left) and vs EMA dimension h (right). Our
        points are the cells of `python -m mega_lra.table --table ablation` (test accuracy,
        mean ± sample std over seeds; no bar for one seed), the paper's are the approximate
        points of `mega_lra/results/paper_results.yaml`. Runs on generated data are left out
        (noted).
    python -m mega_lra.plot curves RUN_DIR [RUN_DIR ...] [--out FILE.png] [--force]
        Learning curves from each run's `csv/metrics.csv` (Lightning's CSVLogger): loss and
        accuracy vs step, train (solid) and val (dashed). A directory without
        `csv/metrics.csv` is searched below (a sweep dir gives all its runs).

    python -m mega_lra.plot bench BENCH_JSON [--models ROW ...] [--out FILE.png] [--force]
        Forward+backward time and peak memory against length, log-log, one line per row, from
        a report of `python -m mega_lra.bench --models ... --lengths 1024 2048 4096 8192 16384`
        (its `bench.json`, or the run dir holding it; the bench draws the same as its own
        `bench.png`); `--models` keeps only those rows.

Output: `ablation.png` / `curves.png` / `bench.png` in the directory given (several: their
common parent), or `--out`. Nothing is overwritten without `--force`: a taken default name gets a
suffix (`ablation-2.png`, ...), an existing `--out` is an error. The path written is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mega_lra.results import figures
from mega_lra.results.paper import load_paper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mega_lra.plot", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="figure", required=True)
    abl = sub.add_parser("ablation", help="Figure 4: accuracy vs chunk size and vs EMA dim h")
    abl.add_argument("dirs", nargs="+", type=Path, metavar="RUNS_DIR", help="searched recursively")
    cur = sub.add_parser("curves", help="learning curves from csv/metrics.csv")
    cur.add_argument("dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a run or sweep dir")
    ben = sub.add_parser("bench", help="time and memory vs length (log-log) from bench.json")
    ben.add_argument("dirs", nargs=1, type=Path, metavar="BENCH_JSON", help="or its run dir")
    ben.add_argument("--models", nargs="+", default=None, metavar="ROW", help="rows to draw")
    for p in (abl, cur, ben):
        p.add_argument(
            "--out",
            type=Path,
            default=None,
            help="the PNG to write (default: <name>.png in the dir given, or in the dirs' "
            "common parent, with a -2, -3 ... suffix rather than overwriting)",
        )
        p.add_argument("--force", action="store_true", help="overwrite an existing file")
    ns = parser.parse_args(argv)
    try:
        if ns.figure == "bench":
            return _bench(ns)
        for d in ns.dirs:
            if not d.is_dir():
                raise figures.PlotError(f"{d}: not a directory")
        if ns.figure == "ablation":
            panels, notes = figures.ablation_panels(ns.dirs, load_paper())
            notes += [n for p in panels for n in p.notes]
            if not any(p.lines for p in panels):
                for n in notes:
                    print(f"note: {n}", file=sys.stderr)
                raise figures.PlotError(
                    f"no ablation runs (Mega / Mega-chunk varying chunk size or EMA dimension, "
                    f"on real data) under {', '.join(map(str, ns.dirs))}"
                )
            fig = figures.draw_ablation(panels)
        else:
            runs, notes = figures.load_curves(ns.dirs)
            if not runs:
                for n in notes:
                    print(f"note: {n}", file=sys.stderr)
                raise figures.PlotError("no learning curve to plot")
            fig = figures.draw_curves(runs)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        path = figures.output_path(ns.out, ns.dirs, f"{ns.figure}.png", ns.force)
        figures.save(fig, path, ns.force)
    except (figures.PlotError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _bench(ns: argparse.Namespace) -> int:
    """`plot bench`: the speed benchmark's time / memory vs length from its bench.json."""
    import json

    from mega_lra.bench import report

    path = ns.dirs[0] / "bench.json" if ns.dirs[0].is_dir() else ns.dirs[0]
    try:
        data = json.loads(path.read_text())
        rows, m, a = data["rows"], data["machine"], data["args"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise figures.PlotError(
            f"{path}: not a bench.json of python -m mega_lra.bench ({err!r})"
        ) from err
    if ns.models:
        unknown = sorted(set(ns.models) - {r["model"] for r in rows})
        if unknown:
            raise figures.PlotError(f"--models {unknown}: no such row in {path}")
        rows = [r for r in rows if r["model"] in ns.models]
    if not any("train_ms" in r for r in rows):
        raise figures.PlotError(f"{path}: no measured row to plot")
    where = m.get("gpu") or f"{m.get('cpu')}, {m.get('threads')} threads"
    title = f"{where}, {a.get('dtype')}, {a.get('size')} config, batch {a.get('batch_size')}"
    out = figures.output_path(ns.out, [path.parent], "bench.png", ns.force)
    report.plot(rows, out, title)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
