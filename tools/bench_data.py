"""Data-path benchmark: prepare rows/s and loader batches/s (prints and saves JSON).

    python tools/bench_data.py [--listops-rows 20000] [--pathfinder-images 10000]
                               [--num-proc 2] [--model-steps 2] [--model-batch 64]
                               [--out runs/bench]

Measures, in a fresh temporary data dir:
* ListOps (LRA lengths 500-2000) and Pathfinder32: generator throughput, then ``task.build``
  (read + tokenise/decode with ``datasets.map`` + save) rows/s, then a cached rebuild's time;
* loader batches/s over one train epoch (``LRADataModule``, batch 64 and 128, padded to the
  Mega-chunk recipe's chunk, ``num_workers=0``: the collation cost alone, in the main process);
* the CPU train-step rate of the task's Mega-chunk recipe (``experiment=lra/mega_chunk/<task>``,
  composed from ``conf/`` and built with ``mega_lra.models.build_classifier``) on the same
  loader's batches, for comparison with the loader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mega_lra.models import build_classifier  # noqa: E402
from mega_lra.training.config import compose  # noqa: E402
from tasks.datamodule import LRADataModule  # noqa: E402
from tasks.listops import ListOpsTask  # noqa: E402
from tasks.pathfinder import PathfinderTask  # noqa: E402

RECIPE = "lra/mega_chunk/{task}"  # the model timed beside the loader


def _time(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_prepare(task, paths: dict, rows: int) -> dict:
    from tasks.base import Paths

    p = Paths.coerce(paths)
    _, gen_s = _time(lambda: task.locate(p, progress=False))
    built, build_s = _time(lambda: task.build(paths, progress=False))
    _, cached_s = _time(lambda: task.build(paths, progress=False))
    return {
        "rows": rows,
        "generate_seconds": round(gen_s, 2),
        "generate_rows_per_s": round(rows / gen_s, 1),
        "prepare_seconds": round(build_s, 2),
        "prepare_rows_per_s": round(rows / build_s, 1),
        "cached_reload_seconds": round(cached_s, 3),
        "cache_bytes": sum(
            f.stat().st_size for f in built.manifest_path.parent.rglob("*") if f.is_file()
        ),
    }


def recipe_model(name: str, task) -> torch.nn.Module:
    """The Mega-chunk recipe's classifier of LRA task `name`, built for the bench's `task`."""
    cfg = compose([f"experiment={RECIPE.format(task=name)}"])
    return build_classifier(cfg.model, task)


def bench_loader(task, paths: dict, batch_size: int, pad_multiple: int) -> dict:
    dm = LRADataModule(
        task, paths, batch_size=batch_size, pad_to_multiple_of=pad_multiple, progress=False
    )
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # warm-up
    n, rows = 0, 0
    start = time.perf_counter()
    for batch in loader:
        n += 1
        rows += len(batch["labels"])
    sec = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "pad_to_multiple_of": pad_multiple,
        "batches": n,
        "batches_per_s": round(n / sec, 1),
        "rows_per_s": round(rows / sec, 1),
    }


def bench_model(name: str, task, paths: dict, steps: int, batch_size: int) -> dict:
    """Optimiser steps/s of the recipe's model (train mode, cross-entropy, AdamW) on the loader's
    batches; the first step is a warm-up."""
    model = recipe_model(name, task)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dm = LRADataModule(
        task, paths, batch_size=batch_size, pad_to_multiple_of=model.pad_multiple, progress=False
    )
    dm.setup()
    it = iter(dm.train_dataloader())
    times = []
    for i in range(steps + 1):
        b = next(it)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(b), b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - start)
    step = sum(times) / len(times)
    return {
        "experiment": RECIPE.format(task=name),
        "model": model.describe(),
        "batch_size": batch_size,
        "seq_len": int(b["attention_mask"].shape[-1]),
        "step_seconds": round(step, 3),
        "steps_per_s": round(1 / step, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listops-rows", type=int, default=20000)
    ap.add_argument("--pathfinder-images", type=int, default=10000)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--model-steps", type=int, default=2, help="0: no model step")
    ap.add_argument("--model-batch", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    args = ap.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    n = args.listops_rows
    val = max(1, n // 48)
    listops = ListOpsTask(
        name="listops_bench",
        source="generate",
        num_proc=args.num_proc,
        gen_rows={"train": n - 2 * val, "val": val, "test": val},
    )
    pf = PathfinderTask(
        name="pathfinder_bench",
        source="generate",
        num_proc=args.num_proc,
        gen_samples=args.pathfinder_images,
    )
    results: dict = {
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), this machine",
        "command": "python " + " ".join(sys.argv),
        "torch_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"data_dir": str(Path(tmp) / "data"), "cache_dir": str(Path(tmp) / "cache")}
        results["listops_prepare"] = bench_prepare(listops, paths, n)
        print("listops prepare", results["listops_prepare"], flush=True)
        results["pathfinder_prepare"] = bench_prepare(pf, paths, args.pathfinder_images)
        print("pathfinder prepare", results["pathfinder_prepare"], flush=True)
        results["loader"] = {}
        for name, task in (("listops", listops), ("pathfinder", pf)):
            pad = recipe_model(name, task).pad_multiple
            for bs in (64, 128):
                r = bench_loader(task, paths, bs, pad)
                results["loader"][f"{name}_bs{bs}"] = r
                print("loader", name, r, flush=True)
        if args.model_steps > 0:
            results["model_step_cpu"] = {
                name: bench_model(name, task, paths, args.model_steps, args.model_batch)
                for name, task in (("listops", listops), ("pathfinder", pf))
            }
            print("model step", results["model_step_cpu"], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"data-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
