"""``python -m mega_lra.eval ckpt_path=PATH [split=test] [out=FILE] [key=value ...]``

Evaluates a mega-lra checkpoint (`checkpoints/best.ckpt` or `last.ckpt` of a run dir) on a split
and prints and writes its metrics (default `<run dir>/eval/<checkpoint>-<split>.json`, numbered,
never overwriting an earlier one). The model, task and data settings come from the checkpoint;
other `key=value` arguments override them (e.g. `paths.data_dir=/data/lra`,
`loader.batch_size=64`, `trainer.accelerator=cpu`); a key the saved config does not have is an
error naming it and the keys expected there. The checkpoint is read with `weights_only=True`: one
whose pickle would build anything but tensors and plain values (it could run code) is refused,
naming the file and the type (`mega_lra.training.checkpoint_files`). Errors exit with status 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

OPTIONS = ("ckpt_path", "split", "out")


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {"split": "test"}
    overrides: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {arg!r}: expected key=value (e.g. ckpt_path=PATH)")
        if key in OPTIONS:
            options[key] = value
        else:
            overrides.append(arg)
    if "ckpt_path" not in options:
        raise ValueError("missing ckpt_path=PATH (a run dir's checkpoints/best.ckpt or last.ckpt)")
    return options, overrides


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from mega_lra.training.console import quiet_known_noise

    quiet_known_noise()
    from mega_lra.training.runner import evaluate
    from tasks.errors import DataError

    try:
        options, overrides = parse(argv)
        result = evaluate(options["ckpt_path"], options["split"], overrides, out=options.get("out"))
    except (ValueError, FileNotFoundError, DataError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{result['split']} accuracy {100 * result['accuracy']:.2f}% (loss {result['loss']:.4f}) "
        f"on {result['rows']} rows; step {result['step']}; written to {result['written_to']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
