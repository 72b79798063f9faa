"""Rebuild the transformers-4.41.2 Mega parity fixtures in tests/hf/fixtures/ (`make hf-fixtures`).

Builds the reference env if needed (``tools.hf_reference.envs.ensure_env``), runs
``tools/hf_reference/generate_fixtures.py`` in it into a scratch folder, then replaces the case
folders under ``tests/hf/fixtures/`` (the README there is kept). Generation is deterministic, so
on an unchanged tree this rewrites identical files; ``--check`` only compares and fails on any
difference.

    python tools/make_hf_fixtures.py [--case NAME ...] [--check] [--out DIR] [--rebuild-env]
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.hf_reference.envs import HFReferenceError, ensure_env, run_reference  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "hf" / "fixtures"


def case_dirs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "meta.json").is_file()}


def differences(new: Path, old: Path) -> list[str]:
    diffs = []
    for name, path in case_dirs(new).items():
        if not (old / name).is_dir():
            diffs.append(f"{name}: missing from {old}")
            continue
        cmp = filecmp.dircmp(path, old / name)
        _, mismatch, errors = filecmp.cmpfiles(path, old / name, cmp.common_files, shallow=False)
        diffs += [f"{name}/{f}: differs" for f in mismatch + errors]
        diffs += [f"{name}/{f}: only in the new build" for f in cmp.left_only]
        diffs += [f"{name}/{f}: only in {old}" for f in cmp.right_only]
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=[], help="only these cases")
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rebuild-env", action="store_true")
    ns = parser.parse_args(argv)

    start = time.monotonic()
    try:
        ensure_env(ROOT, rebuild=ns.rebuild_env)
        scratch_root = ROOT / ".cache"
        scratch_root.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hf-fixtures-", dir=scratch_root) as tmp:
            args = ["generate_fixtures.py", tmp]
            for name in ns.case:
                args += ["--case", name]
            proc = run_reference(args, root=ROOT, timeout=1800)
            sys.stderr.write(proc.stderr)
            new = Path(tmp)
            if ns.check:
                diffs = differences(new, ns.out)
                if diffs:
                    print("fixtures differ from a fresh build:\n  " + "\n  ".join(diffs))
                    return 1
                print(f"{len(case_dirs(new))} fixture cases reproduce {ns.out} byte for byte")
                return 0
            ns.out.mkdir(parents=True, exist_ok=True)
            built = case_dirs(new)
            if not ns.case:  # a full build also drops cases that no longer exist
                for name, path in case_dirs(ns.out).items():
                    if name not in built:
                        shutil.rmtree(path)
                        print(f"removed stale case {name}")
            for name, path in built.items():
                if (ns.out / name).exists():
                    shutil.rmtree(ns.out / name)
                shutil.move(str(path), ns.out / name)
    except HFReferenceError as err:
        print(err, file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in ns.out.rglob("*") if p.is_file())
    print(
        f"wrote {len(built)} cases to {ns.out} ({size / 1e6:.2f} MB in total) "
        f"in {time.monotonic() - start:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
