"""Training-step benchmark of the recipes in `conf/experiment/`
(`python -m mega_lra.bench_training`, `make bench-train`).

For each experiment it times one optimiser step of the real training path, the Lightning
`LRAModule` inside a `Trainer` (encoder, backbone, head, loss, backward, gradient clipping,
AdamW, the lr schedule, logging), on a batch held in memory at the task's full length, and
beside it the backbone's forward+backward alone on the same batch (what `make bench` measures),
so the overhead of everything around the backbone shows as a ratio. With `--loader`, the demos
are also timed with their real `LRADataModule` batches, to show the data path is not the
bottleneck. Each case runs in its own process (`mega_lra.bench.worker`); medians of `--steps`
steps after `--warmup`. The default experiments are read from `conf/experiment/`: the demos,
every LRA recipe (task by task, in the paper's order) and the speech recipes.

From the measured step time it derives, for the recipe's updates x effective batch, the hours
on this device; for GPUs without a measurement it gives a **projection** from the step's FLOPs
(torch's FlopCounterMode on the model actually built) at an assumed achieved rate
(`--assumed-tflops`, stated beside every projected number). Writes JSON + Markdown to the run
dir (default `runs/bench_training/<timestamp>/`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from mega_lra.atomic_files import write_json, write_text
from mega_lra.bench.worker import machine, run_dir, run_in_worker


def demos() -> list[str]:
    """The demo experiments (`conf/experiment/demo/`)."""
    from mega_lra.models import catalog

    return catalog.experiment_names("demo/")


def recipes() -> list[str]:
    """Every LRA recipe, task by task in the paper's order, then the speech recipes."""
    from mega_lra.models import catalog

    names = catalog.experiment_names("lra/")
    lra = [n for task in catalog.lra_tasks() for n in names if n.rsplit("/", 1)[-1] == task]
    return lra + catalog.experiment_names("speech/")


def synthetic_batch(task, model, batch: int, length: int | None = None) -> dict[str, Any]:
    """A batch at the task's full length (rounded up to the model's chunk), all positions real."""
    import torch

    length = length or task.max_length
    multiple = getattr(model, "pad_multiple", 0)
    if multiple:
        length = -(-length // multiple) * multiple
    shape = (batch, 2, length) if task.head == "retrieval" else (batch, length)
    out: dict[str, Any] = {"labels": torch.randint(0, task.num_classes, (batch,))}
    if task.input_kind == "tokens":
        out["input_ids"] = torch.randint(3, task.vocab_size, shape)
    else:
        out["inputs"] = torch.randn(shape)
    out["attention_mask"] = torch.ones(shape, dtype=torch.long)
    out["lengths"] = torch.full(shape[:-1], length)
    return out


class _Held:
    """A map-style dataset that returns the same ready batch `n` times (no data loading)."""

    def __init__(self, batch: dict[str, Any], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.batch


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one experiment in this process (what `main` sends a worker)."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from mega_lra.models import build_classifier
    from mega_lra.training.config import compose
    from mega_lra.training.module import LRAModule

    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    cfg = compose([f"experiment={case['experiment']}", *case.get("overrides", [])])
    task = instantiate(cfg.task)
    model = build_classifier(cfg.model, task)
    steps, warmup = case["steps"], case["warmup"]
    result: dict[str, Any] = dict(case)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["length"] = case.get("length") or task.max_length
    result["effective_batch"] = cfg.effective_batch_size or cfg.loader.batch_size
    # the recipe's updates: the schedule's length (S4-v2's cosine), else trainer.max_steps; None
    # for a recipe counted in epochs only (S4-v1: the updates depend on the training rows)
    updates = cfg.sched.get("total_steps") or cfg.trainer.max_steps
    result["total_steps"] = int(updates) if updates and updates > 0 else None
    device = case["device"]
    precision = "bf16-mixed" if case["dtype"] == "bfloat16" else "32-true"

    def fit_time(model: torch.nn.Module, loader: Any) -> list[float]:
        """Step times of `len(loader)` optimiser steps through a Lightning Trainer."""
        times: list[float] = []

        class Timer(L.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - self.start)

        module = LRAModule(
            model,
            instantiate(cfg.optim),
            instantiate(cfg.sched),
            num_classes=task.num_classes,
            total_steps=result["total_steps"] or steps + warmup,
        )
        trainer = L.Trainer(
            accelerator=device,
            devices=1,
            precision=precision,
            max_steps=steps + warmup,
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[Timer()],
        )
        trainer.fit(module, train_dataloaders=loader)
        return times

    if case.get("real_data"):  # the demo's real loader vs its first batch held in memory
        from mega_lra.training.runner import build

        setup = build(compose([f"experiment={case['experiment']}", "loader.num_workers=0"]))
        real = setup.datamodule.train_dataloader()
        batch = next(iter(real))
        result["batch"] = len(batch["labels"])
        result["length"] = batch["attention_mask"].shape[-1]
        held = torch.utils.data.DataLoader(_Held(batch, steps + warmup), batch_size=None)
        torch.manual_seed(0)
        times = fit_time(build_classifier(cfg.model, task), held)
        torch.manual_seed(0)
        real_times = fit_time(build_classifier(cfg.model, task), real)
        result["step_ms"] = 1000 * statistics.median(times[warmup:])
        result["real_loader_step_ms"] = 1000 * statistics.median(real_times[warmup:])
        result["real_loader_ratio"] = result["real_loader_step_ms"] / result["step_ms"]
        return result

    batch = synthetic_batch(task, model, case["batch"], case.get("length"))
    result["length"] = batch["attention_mask"].shape[-1]
    held = torch.utils.data.DataLoader(_Held(batch, steps + warmup), batch_size=None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = fit_time(model, held)
    if device == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["step_ms"] = 1000 * statistics.median(times[warmup:])
    result["step_ms_all"] = [round(1000 * t, 3) for t in times]

    # the backbone alone, forward + backward, same batch
    model.train()
    x = batch["input_ids"] if "input_ids" in batch else batch["inputs"]
    mask = batch["attention_mask"]
    if x.dim() == 3:
        x, mask = x.flatten(0, 1), mask.flatten(0, 1)
    where = next(model.parameters()).device
    x, mask = x.to(where), mask.to(where)
    backbone_times = []
    for i in range(steps + warmup):
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            emb = model.embed(x, mask.bool())
        emb.requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            y = model.backbone(emb, mask.bool())
        y.float().square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            backbone_times.append(time.perf_counter() - start)
    result["backbone_ms"] = 1000 * statistics.median(backbone_times)
    result["overhead_ratio"] = result["step_ms"] / result["backbone_ms"]
    result["step_gflop"] = step_flops(model, batch) / 1e9
    return result


def step_flops(model: Any, batch: dict[str, Any]) -> float:
    """Matrix-multiply FLOPs of one forward+backward of the classifier on `batch` (torch's
    FlopCounterMode: GEMMs and attention; the EMA's FFTs and elementwise work not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(batch)
        torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def projected_gpu_hours(row: dict[str, Any], tflops: float) -> float | None:
    """A PROJECTION: the recipe's matmul FLOPs at an assumed achieved rate (not a measurement);
    None when the recipe's updates are not known (counted in epochs)."""
    if not row.get("total_steps"):
        return None
    per_sample = row["step_gflop"] * 1e9 / row["batch"]
    return row["total_steps"] * row["effective_batch"] * per_sample / (tflops * 1e12) / 3600


def hours(row: dict[str, Any]) -> float | None:
    """Hours for the recipe's updates at its effective batch, from the measured step time; None
    when the recipe's updates are not known (counted in epochs)."""
    if not row.get("total_steps"):
        return None
    per_sample = row["step_ms"] / 1000 / row["batch"]
    return row["total_steps"] * row["effective_batch"] * per_sample / 3600


def _hours_text(h: float | None) -> str:
    if h is None:
        return "(epochs)"
    return f"{h:,.0f}" if h >= 10 else f"{h:.2f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# mega-lra training-step benchmark",
        "",
        f"{m['device_name']}; torch {m['torch']}; {report['args']['dtype']}; "
        f"batch {report['args']['batch']}; median of {report['args']['steps']} steps after "
        f"{report['args']['warmup']} warm-up; git {m.get('git_sha')}",
        "",
        "| experiment | L | params | step ms | steps/s | backbone fwd+bwd ms | step / backbone "
        f"| peak MiB | recipe hours on this {m['device']} (measured) | GPU hours (projected) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if "step_ms" not in r:
            lines.append(f"| {r['experiment']} | | | | | | | | {r.get('error', '')} | |")
            continue
        ratio = f"{r['overhead_ratio']:.2f}" if "overhead_ratio" in r else ""
        backbone = f"{r['backbone_ms']:.1f}" if "backbone_ms" in r else ""
        recipe_hours = "" if r.get("real_data") else _hours_text(hours(r))
        gpu = ""
        if "step_gflop" in r:
            gpu = _hours_text(projected_gpu_hours(r, report["args"]["assumed_tflops"]))
        peak = f"{r['peak_mib']:,.0f}" if "peak_mib" in r else ""
        name = r["experiment"]
        if r.get("real_data"):
            name += (
                f" (batch {r['batch']} held: real loader {r['real_loader_step_ms']:.1f} ms, "
                f"{r['real_loader_ratio']:.2f}x)"
            )
        lines.append(
            f"| {name} | {r['length']} | {r['params']:,} | {r['step_ms']:.1f} | "
            f"{1000 / r['step_ms']:.2f} | {backbone} | {ratio} | {peak} | {recipe_hours} | {gpu} |"
        )
    lines += [
        "",
        "Recipe hours = updates x effective batch x (step time / batch), from the measured step "
        "time at this batch size; larger batches on a GPU amortise better, so for GPUs this is "
        "an upper bound until measured on a card.",
        "",
        "GPU hours (projected) = the recipe's updates x effective batch x matmul FLOPs per "
        "sample (forward+backward, torch's FlopCounterMode; FFTs not counted) at an ASSUMED "
        f"achieved {report['args']['assumed_tflops']:g} TFLOP/s. A projection, not a "
        "measurement: Mega's small hidden sizes keep GPU utilisation low, so real runs may be "
        "slower; replace with measured steps/s from `--device cuda`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mega_lra.bench_training", description=__doc__)
    parser.add_argument(
        "--experiments",
        nargs="+",
        default=None,
        help="experiments of conf/experiment/ (default: the demos and every recipe)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--loader", action="store_true", help="also time the demos' real batches")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=["lra/transformer/pathx"],
        help="experiments to leave out (default: the Transformer at 16K, which needs > 10 GB "
        "of attention scores per step on CPU with attention dropout)",
    )
    parser.add_argument(
        "--assumed-tflops",
        type=float,
        default=10.0,
        help="achieved GPU TFLOP/s assumed for the projected GPU hours (default 10: about 3%% of "
        "an A100's bf16 peak; LRA-size models are small and memory bound)",
    )
    parser.add_argument("--out", default=None)
    ns = parser.parse_args(argv)

    import torch

    threads = ns.threads or torch.get_num_threads()
    try:
        out = run_dir(ns.out, "bench_training", ("bench_training.json",))
    except FileExistsError as err:
        parser.error(str(err))
    demo_names = demos()
    ns.experiments = ns.experiments or demo_names + recipes()
    cases = []
    for exp in ns.experiments:
        if exp in ns.skip:
            continue
        base = dict(
            experiment=exp, batch=ns.batch, steps=ns.steps, warmup=ns.warmup, device=ns.device,
            dtype=ns.dtype, threads=threads,
        )  # fmt: skip
        cases.append(base)
        if ns.loader and exp in demo_names:
            cases.append({**base, "real_data": True})
    rows = []
    started = time.perf_counter()
    for case in cases:
        try:
            row = run_in_worker("train_step", case)
        except RuntimeError as err:
            row = {**case, "error": str(err)}
            print(f"[bench-train] {case['experiment']}: failed: {err}", flush=True)
        else:
            extra = f", backbone {row['backbone_ms']:.1f} ms" if "backbone_ms" in row else ""
            print(
                f"[bench-train] {case['experiment']:32s} step {row['step_ms']:9.1f} ms{extra} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        rows.append(row)
    info = machine(ns.device, threads)
    info["device_name"] = info.get("gpu") or f"{info['cpu']}, {threads} threads"
    report = {
        "machine": info,
        "args": vars(ns),
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
    }
    write_json(out / "bench_training.json", report)
    write_text(out / "bench_training.md", markdown(report))
    print((out / "bench_training.md").read_text())
    print(f"[bench-train] wrote {out}/bench_training.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
