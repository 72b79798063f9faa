"""Seeded ListOps generator writing the official ``listops-1000/basic_{train,val,test}.tsv``.

Rules follow the LRA generator (lra_benchmarks/data/listops.py), re-implemented:

* operators ``[MIN [MAX [MED [SM`` (SM = sum mod 10, MED = floor of the median), values 0..9;
* a node at depth < ``max_depth`` is an operator with probability ``value_p`` (0.25), else a
  value; at ``max_depth`` it is always a value; an operator takes ``randint(2, max_args)`` args;
* a tree's length counts values, operators and ``]`` (not parentheses); only trees with
  ``min_length < length < max_length`` are kept (strict, as in LRA);
* text format: the operator and its arguments are folded into left-nested pairs, each pair
  written ``( a b )``, closed by ``]`` - e.g. ``( ( ( [MAX 2 ) 9 ) ] )`` has value 9;
* TSV with header ``Source\tTarget``.

Unlike LRA's, this generator is reproducible: rows come in shards of `SHARD_ROWS`, shard ``i``
drawn from ``random.Random(seed * 1_000_003 + i)``, duplicates dropped in order (so no row appears
in two splits), then rows are cut into train/val/test. The result does not depend on the
number of worker processes.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
SHARD_ROWS = 256


@dataclass(frozen=True)
class ListOpsSpec:
    """Generator settings (defaults are LRA's)."""

    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000
    value_p: float = 0.25


class _TooLong(Exception):
    pass


def _apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    s = sorted(args)  # [MED: floor of the median, as int(np.median(...)) for values >= 0
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def _tree(rng: random.Random, spec: ListOpsSpec, depth: int, budget: list[int]) -> tuple[str, int]:
    """(text, value) of a random subtree; ``budget[0]`` counts tokens, aborting when too long."""
    if depth >= spec.max_depth or rng.random() > spec.value_p:
        v = rng.randrange(10)
        budget[0] += 1
        if budget[0] >= spec.max_length:
            raise _TooLong
        return str(v), v
    nargs = rng.randint(2, spec.max_args)
    budget[0] += 2
    args = [_tree(rng, spec, depth + 1, budget) for _ in range(nargs)]
    op = rng.choice(OPERATORS)
    parts = ["( " * (nargs + 1), op, " ", args[0][0], " )"]
    for text, _ in args[1:]:
        parts += [" ", text, " )"]
    parts.append(" ] )")
    return "".join(parts), _apply(op, [v for _, v in args])


def sample(rng: random.Random, spec: ListOpsSpec) -> tuple[str, int]:
    """One expression within the length bounds, and its value."""
    while True:
        budget = [0]
        try:
            text, value = _tree(rng, spec, 1, budget)
        except _TooLong:
            continue
        if spec.min_length < budget[0] < spec.max_length:
            return text, value


def _shard(args: tuple[int, int, ListOpsSpec]) -> list[tuple[str, int]]:
    seed, index, spec = args
    rng = random.Random(seed * 1_000_003 + index)
    return [sample(rng, spec) for _ in range(SHARD_ROWS)]


def generate_rows(
    total: int, spec: ListOpsSpec, seed: int, num_proc: int = 1, progress: bool = True
) -> list[tuple[str, int]]:
    """``total`` distinct (expression, value) rows, reproducible from ``seed``."""
    rows: dict[str, int] = {}
    next_shard = 0
    bar = tqdm(total=total, desc="generate ListOps", unit="row", disable=not progress)
    pool = ProcessPoolExecutor(num_proc) if num_proc > 1 else None
    try:
        while len(rows) < total:
            missing = total - len(rows)
            n_shards = -(-missing // SHARD_ROWS)
            jobs = [(seed, next_shard + i, spec) for i in range(n_shards)]
            next_shard += n_shards
            results = pool.map(_shard, jobs) if pool else map(_shard, jobs)
            for shard in results:
                for text, value in shard:
                    if len(rows) < total and text not in rows:
                        rows[text] = value
                        bar.update(1)
            if next_shard > 50 * (-(-total // SHARD_ROWS)) + 100:
                raise RuntimeError(
                    f"ListOps generator: only {len(rows)} distinct rows after {next_shard} "
                    "shards; widen the length bounds or raise max_depth/max_args"
                )
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    return list(rows.items())


def write_listops(
    folder: Path,
    sizes: dict[str, int],
    spec: ListOpsSpec,
    seed: int,
    num_proc: int = 1,
    progress: bool = True,
    task: str = "basic",
) -> None:
    """Write ``folder/{task}_{train,val,test}.tsv`` with ``sizes[split]`` rows each."""
    total = sum(sizes[s] for s in ("train", "val", "test"))
    rows = generate_rows(total, spec, seed, num_proc, progress)
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for split in ("train", "val", "test"):
        chunk = rows[start : start + sizes[split]]
        start += sizes[split]
        with open(folder / f"{task}_{split}.tsv", "w", encoding="utf-8") as f:
            f.write("Source\tTarget\n")
            f.writelines(f"{text}\t{value}\n" for text, value in chunk)
