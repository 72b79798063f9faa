"""Runs a fixture generator of tools/baseline_reference/ inside its side environment.

Each generator script holds `generate()` (run inside the environment, where the PyPI reference
package is importable) and calls `run_script(__file__, generate, spec)` as its entry point:
without `--in-env` it builds (or reuses) the environment of `spec` under .cache/ with
`tools.hf_reference.envs` and re-runs itself there with `--in-env`; with it, it generates.
`spec=None` is the transformers reference environment (`reference_spec()`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_spec(name: str, requirements: list[str], module: str):
    """The EnvSpec of a side environment with the pinned torch and `requirements`; `module` is
    the import that proves it works."""
    sys.path.insert(0, str(ROOT))
    from tools.hf_reference.envs import TORCH_REQUIREMENT, EnvSpec

    return EnvSpec(
        name=name,
        torch=TORCH_REQUIREMENT,
        requirements=requirements,
        probe=f"import torch, {module}; print(torch.__version__)",
        what=name,
    )


def run_script(script: str, generate: Callable[[], None], spec=None, timeout: int = 900) -> None:
    """The entry point of a generator script (see the module docstring)."""
    if "--in-env" in sys.argv:
        generate()
        return
    sys.path.insert(0, str(ROOT))
    from tools.hf_reference.envs import reference_spec, run_in_env

    proc = run_in_env(spec or reference_spec(), [script, "--in-env"], root=ROOT, timeout=timeout)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    raise SystemExit(proc.returncode)
