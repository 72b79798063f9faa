"""The paper's tables from run dirs (`python -m mega_lra.table [RUNS_DIR ...]`, `make table`).

Reads every `results.json` under the given directories (default `runs/`, searched recursively, so
a Hydra sweep dir works as is) and prints one of the Mega paper's tables next to the paper's own
numbers (`mega_lra/results/paper_results.yaml`, the one place they live):

- `--table lra` (default): Table 2, rows = model, columns = the six LRA tasks + Avg + Speed and
  Mem (every row of the paper's, the attention baselines and S4-v1 / S4-v2 / S4-v2‡ included:
  the paper's numbers alone where there is no run; a model with runs and no Table 2 row, e.g.
  Local Attention, is compared with LRA's Table 1). Speed / Mem: the paper's (x XFM‡, training
  on Text at 4K), and ours with `--bench PATH` (a `bench_training.json` of
  `python -m mega_lra.bench_training --table2`, or a `bench.json` of `python -m mega_lra.bench`,
  or its run dir), relative to XFM‡ (our `transformer`) in the same report; each number is
  marked with its device. A cell marked § has runs outside LRA's rule of ±10% of the base
  Transformer's parameters on the task (the runs' count vs `experiment=lra/xfm/<task>`'s);
- `--table lra1`: LRA's Table 1 (Tay et al. 2021: Transformer, Local Attention, Sparse
  Transformer, Longformer, Linformer, Reformer, Sinkhorn, Synthesizer, BigBird, Linear
  Transformer, Performer; Path-X FAIL), every row, our runs beside it;
- `--table attention`: Table 3, Mega on Text and Image x softmax / relu2 / laplace;
- `--table sc`: Table 4, SC-Raw, Mega base / big by experiment name;
- `--table ablation`: Figure 4's data, accuracy vs chunk size and vs EMA dimension h; with runs
  of `mega_s4d`, Mega's EMA beside the S4D kernel at the same settings.
- `--table spt`: self-pretraining (mega_lra/results/spt.py): per model, from scratch, compute-
  matched controls and self-pretrained + fine-tuned runs side by side, with their steps.

Each cell is the test accuracy (at the best-validation checkpoint) in percent: mean ± sample std
(ddof = 1) over seeds, with the number of seeds; one seed has no std ("± n/a"), a missing cell is
"—", never 0. Under each of our rows: the paper's value and the difference ours − paper.

The work is done by `mega_lra.results` (runs -> groups -> tables -> text); this module only
parses the command line. How runs become cells (docs/reproduce.md says the same for users):
- Runs are grouped by `results.json`'s `group` (the config hash without seed and paths), never
  by folder. A cell (model x task) may hold several groups, e.g. two learning rates: the cell
  shows the group with the highest mean best-validation accuracy (a choice made on validation,
  not test; ties: more seeds), marked †, and a note lists every group with the config values
  that tell them apart (from each run's `config.yaml`) and its numbers.
- A paper cell only takes groups run in the paper's setting for it (`settings` in the paper
  file: chunk size, attention function, EMA dimension); others are left out with a note saying
  how they differ (they belong to Table 3 or Figure 4).
- Duplicate seeds in a group (a rerun) count once: the run whose `results.json` is newest is
  kept, and a note names the kept and the ignored run dirs.
- Runs on generated data (`data_source: generate`) are never compared with the paper: they are
  shown in a separate "Generated data" section without paper values.
- A `results.json` that cannot be read, lacks a required key or has a bad value is skipped with
  a warning naming the file and the key (`--strict`: an error, exit 2, no table). Runs whose
  `status` is present and not `finished` are left out with a note.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mega_lra.results.grouping import group_runs
from mega_lra.results.measured import read_bench
from mega_lra.results.paper import load_paper
from mega_lra.results.render import FORMATS, render_csv, render_latex, render_markdown
from mega_lra.results.runs import load_runs, run_notes
from mega_lra.results.tables import TABLES, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mega_lra.table",
        description="Aggregate run dirs (results.json) into the Mega paper's tables.",
    )
    parser.add_argument(
        "runs_dirs",
        nargs="*",
        type=Path,
        metavar="RUNS_DIR",
        help="directories searched recursively for results.json (default: runs/)",
    )
    parser.add_argument(
        "--table",
        choices=TABLES,
        default="lra",
        help="lra = the Mega paper's Table 2 with Speed / Mem (default), lra1 = LRA's Table 1 "
        "(Tay et al. 2021; the efficient Transformers), attention = Table 3, sc = Table 4, "
        "ablation = Figure 4, spt = self-pretraining vs from scratch",
    )
    parser.add_argument(
        "--bench",
        type=Path,
        default=None,
        metavar="PATH",
        help="--table lra: our Speed / Mem columns (x XFM‡, same device) from a benchmark "
        "report: bench_training.json of 'python -m mega_lra.bench_training --table2' (one "
        "training step, what Table 2 measures), bench.json of 'python -m mega_lra.bench' (the "
        "backbone at L = 4096), or the run dir holding it",
    )
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="(default: markdown)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a bad results.json is an error (exit 2, no table) instead of a warning",
    )
    ns = parser.parse_args(argv)
    dirs = ns.runs_dirs or [Path("runs")]
    for d in dirs:
        if not d.is_dir():
            print(
                f"error: {d} is not a directory (give the run dirs: {parser.prog} RUNS_DIR ...)",
                file=sys.stderr,
            )
            return 2
    try:
        paper = load_paper()
        measured = read_bench(ns.bench) if ns.bench is not None else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    loaded = load_runs(dirs)
    kind = "error" if ns.strict else "warning"
    for message in loaded.errors:
        print(f"{kind}: {message}", file=sys.stderr)
    if ns.strict and loaded.errors:
        print(f"error: {len(loaded.errors)} bad results.json (--strict): no table", file=sys.stderr)
        return 2
    where = ", ".join(str(d) for d in dirs)
    if not loaded.runs:
        print(f"error: no finished run (results.json) under {where}", file=sys.stderr)
        return 1
    groups, group_notes = group_runs(loaded.runs)
    grids = build(ns.table, groups, paper, measured=measured)
    notes = run_notes(loaded, group_notes)
    if not any(row.cells for g in grids for row in g.rows):  # paper rows alone are no table
        print(
            f"error: none of the {len(loaded.runs)} runs under {where} fits --table {ns.table}",
            file=sys.stderr,
        )
        for g in grids:
            for n in g.notes:
                print(f"  {n}", file=sys.stderr)
        return 1
    if ns.format == "csv":
        sys.stdout.write(render_csv(grids))
        for n in [n for g in grids for n in g.notes] + notes:
            print(f"note: {n}", file=sys.stderr)
    elif ns.format == "latex":
        sys.stdout.write(render_latex(grids, notes))
    else:
        sys.stdout.write(render_markdown(grids, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
