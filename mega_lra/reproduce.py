"""``python -m mega_lra.reproduce``: the paper's Table 2 grid as one resumable Hydra multirun.

Every LRA recipe (``conf/experiment/lra/<model>/<task>.yaml``: the models that have recipes x
the LRA tasks, ``conf/task/*.yaml`` with ``benchmark: lra``) x 5 seeds, e.g. 3 models x 6 tasks
x 5 seeds = 90 runs (`make reproduce-lra`), each in its own run dir
``<out>/<experiment>/seed_<seed>`` (e.g. ``runs/reproduce-lra/lra/mega/listops/seed_1``),
launched as

    python -m mega_lra.train -m experiment=lra/mega/listops,... seed=1,2,3,4,5 resume=true \\
        hydra.sweep.dir=<out> hydra.sweep.subdir=<experiment>/seed_<seed> [hydra/launcher=slurm]

through the default Hydra launcher (one run after another on this machine), SLURM
(``--launcher slurm``: parallel jobs, requeued on preemption/timeout) or submitit's local
executor. Running the same command again continues the grid: finished runs are left as they
are, interrupted ones resume from their ``checkpoints/last.ckpt``, missing ones start. Each launch
keeps its Hydra bookkeeping in ``<run dir>/.hydra/<launch time>/`` and the previous sweep file as
``multirun.<time>.yaml``, so nothing a launch wrote is overwritten. ``--dry-run`` prints the
command and the state of every run, and launches nothing. Extra arguments are Hydra overrides
for every run (``paths.data_dir=...``, ``hydra.launcher.partition=gpu``, ...).

Then: ``python -m mega_lra.table <out>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mega_lra.models.catalog import experiment_names, lra_tasks, recipe_models
from mega_lra.training.run_dir import LAST, RESULTS

SEEDS = (1, 2, 3, 4, 5)
LAUNCHERS = {"basic": None, "slurm": "slurm", "submitit_local": "submitit_local"}
DEFAULT_OUT = Path("runs") / "reproduce-lra"
SUBDIR = "${hydra.runtime.choices.experiment}/seed_${seed}"


@dataclass(frozen=True)
class PlannedRun:
    experiment: str
    seed: int
    run_dir: Path

    @property
    def state(self) -> str:
        """'finished', 'resumable' (has last.ckpt) or 'new'."""
        if (self.run_dir / RESULTS).is_file():
            return "finished"
        return "resumable" if (self.run_dir / LAST).is_file() else "new"


def grid(experiments: Sequence[str], seeds: Sequence[int], out: Path) -> list[PlannedRun]:
    """Every (experiment, seed) run and its run dir (the one `SUBDIR` gives it)."""
    return [PlannedRun(e, s, out / e / f"seed_{s}") for e in experiments for s in seeds]


def command(
    experiments: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    launcher: str = "basic",
    overrides: Sequence[str] = (),
) -> list[str]:
    """The `mega_lra.train` multirun that runs (or continues) the grid."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    args = [
        sys.executable,
        "-m",
        "mega_lra.train",
        "-m",
        f"experiment={','.join(experiments)}",
        f"seed={','.join(str(s) for s in seeds)}",
        "resume=true",
        f"hydra.sweep.dir={out}",
        f"hydra.sweep.subdir={SUBDIR}",
        "hydra.output_subdir=.hydra/${now:%Y-%m-%d_%H-%M-%S-%f}",
    ]
    if LAUNCHERS[launcher]:
        args.append(f"hydra/launcher={LAUNCHERS[launcher]}")
    return args + list(overrides)


def keep_sweep_file(out: Path) -> Path | None:
    """Rename the previous launch's `multirun.yaml` (Hydra rewrites it) to keep it."""
    old = out / "multirun.yaml"
    if not old.is_file():
        return None
    stamp = dt.datetime.fromtimestamp(old.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S-%f")
    kept = out / f"multirun.{stamp}.yaml"
    old.rename(kept)
    return kept


def _csv(text: str) -> list[str]:
    """A list given as `a,b,c` or `"a b c"` (make's MODELS="reformer performer")."""
    return [x for x in re.split(r"[,\s]+", text) if x]


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="python -m mega_lra.reproduce",
        description="Launch (or continue) the Table 2 grid: models x tasks x seeds.",
        epilog="Other arguments are Hydra overrides passed to every run.",
    )
    models, tasks = recipe_models("lra"), lra_tasks()
    p.add_argument(
        "--models",
        type=_csv,
        default=None,
        help=f"models, comma- or space-separated (default: every one with recipes, "
        f"{','.join(models)})",
    )
    p.add_argument("--tasks", type=_csv, default=None, help=f"default: {','.join(tasks)}")
    p.add_argument(
        "--experiments",
        type=_csv,
        default=None,
        help="experiment names instead of lra/<model>/<task> (e.g. demo/listops)",
    )
    p.add_argument("--seeds", type=_csv, default=[str(s) for s in SEEDS], help="default 1..5")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.add_argument("--launcher", choices=sorted(LAUNCHERS), default="basic")
    p.add_argument("--dry-run", action="store_true", help="print the command and run states")
    args, overrides = p.parse_known_args(list(argv))
    unknown = [o for o in overrides if o.startswith("--")]
    if unknown:
        p.error(f"unknown option(s) {unknown}; Hydra overrides look like key=value")
    try:
        args.seeds = [int(s) for s in args.seeds]
    except ValueError:
        p.error(f"--seeds {','.join(args.seeds)}: expected integers separated by commas")
    if args.experiments is None:
        chosen = args.models is not None or args.tasks is not None
        args.models, args.tasks = args.models or models, args.tasks or tasks
        bad = sorted(set(args.models) - set(models)) + sorted(set(args.tasks) - set(tasks))
        if bad:
            p.error(f"unknown model/task {bad}: models {models}, tasks {tasks}")
        recipes = set(experiment_names("lra/"))
        wanted = [f"lra/{m}/{t}" for m in args.models for t in args.tasks]
        missing = [e for e in wanted if e not in recipes]
        if missing and chosen:
            p.error(f"no recipe for {missing} (conf/experiment/<name>.yaml)")
        args.experiments = [e for e in wanted if e in recipes]  # the default: every recipe
    return args, overrides


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.resolve()
    runs = grid(args.experiments, args.seeds, out)
    cmd = command(args.experiments, args.seeds, out, args.launcher, overrides)
    states = Counter(r.state for r in runs)
    summary = ", ".join(f"{states[k]} {k}" for k in ("finished", "resumable", "new"))
    print(f"[mega-lra] {len(runs)} runs in {out}: {summary}")
    if args.dry_run:
        for r in runs:
            print(f"  {r.state:9s}  {r.run_dir}")
        print(shlex.join(cmd))
        return 0
    if states["finished"] == len(runs):
        print(f"[mega-lra] every run is finished. Table: python -m mega_lra.table {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    keep_sweep_file(out)
    print(shlex.join(cmd), flush=True)
    code = subprocess.call(cmd)
    after = Counter(r.state for r in runs)
    print(
        f"[mega-lra] {after['finished']}/{len(runs)} runs finished"
        + ("" if code == 0 else f" (the sweep exited with status {code}; run again to continue)")
        + f". Table: python -m mega_lra.table {out}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
