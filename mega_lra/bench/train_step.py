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

`--table2` measures the Mega paper's Table 2 Speed and Mem columns on the device at hand: one
training step (forward + backward + optimiser) of each Table 2 model's Text recipe
(`experiment=lra/<model>/text`; the models are the Table 2 rows of `paper_results.yaml` that
have Speed / Mem, XFM‡ = `transformer` first; a model without a recipe yet is skipped with a
line saying so), every model at the same L = 4096 (`--length`; a Mega recipe's bias table grows to
it, LRA's Text recipes read 1K), one batch size for all (`--batch`; default 1 on
CPU, the XFM‡ Text recipe's per-device batch on CUDA), and reports speed = t(XFM‡) / t(model)
and memory = peak(model) / peak(XFM‡) beside the paper's. Peak memory of the step: CUDA's
allocator peak over the steps; on CPU the worker's peak RSS over the steps minus its RSS before
the model was built (each case runs in a fresh process). `--length N` and `--tiny` (every model
at the speed benchmark's tiny sizes) and `--override KEY=VALUE` make smoke tests of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from mega_lra.atomic_files import write_json, write_text
from mega_lra.bench.worker import MIB, current_rss, machine, peak_rss, run_dir, run_in_worker
from mega_lra.results.measured import BASELINE, device_name, ratios, table2_rows

TABLE2_LENGTH = 4096  # Table 2: "training speed and peak memory on Text at 4K"


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


def table2_models() -> list[str]:
    """The models of Table 2's Speed / Mem columns, read from the paper file (a reference row
    such as S4-v2‡ gives the model of ours it describes): XFM‡ (`transformer`) first."""
    from mega_lra.results.paper import load_paper

    paper = load_paper()
    models = [paper.lra_bench_of[row] for row in paper.lra_speed]
    return list(dict.fromkeys([BASELINE, *models]))


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
    if case.get("tiny"):  # smoke tests: the speed benchmark's tiny sizes, where the model has them
        from omegaconf import open_dict

        from mega_lra.bench.speed import shrink

        with open_dict(cfg.model):
            shrink(cfg.model)
    task = instantiate(cfg.task)
    if (cfg.model.get("max_positions") or task.max_length) < task.max_length:
        # a recipe's own bias table (Mega's Text: 4002 positions) grows to the measured length
        cfg.model.max_positions = None
    rss_before = current_rss()
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
        allocated_before = torch.cuda.memory_allocated()
    times = fit_time(model, held)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        result["peak_mib"] = peak / MIB
        result["step_peak_mib"] = (peak - allocated_before) / MIB
        result["memory_kind"] = "CUDA allocator peak over the steps (weights, gradients, "
        result["memory_kind"] += "optimiser state, activations)"
    else:
        result["peak_mib"] = peak_rss() / MIB  # the whole process (interpreter, libraries)
        result["step_peak_mib"] = (peak_rss() - rss_before) / MIB
        result["memory_kind"] = "peak RSS of the worker minus its RSS before the model was built"
    result["step_ms"] = 1000 * statistics.median(times[warmup:])
    result["step_ms_all"] = [round(1000 * t, 3) for t in times]
    if not case.get("extras", True):  # --table2: the step alone
        return result

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
            note = r.get("skipped") or r.get("error", "")
            lines.append(f"| {r['experiment']} | | | | | | | | {note} | |")
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


def _in_process(case: dict[str, Any]) -> dict[str, Any]:
    """run_case in this process; a failure becomes RuntimeError, as from a worker."""
    try:
        return run_case(case)
    except Exception as err:  # noqa: BLE001 - a failed case becomes a note in its row
        raise RuntimeError(f"{type(err).__name__}: {err}") from err


def table2_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Table 2's Speed / Mem of the measured rows against XFM‡'s (`measured.ratios`)."""
    by_model = table2_rows(rows)
    speed, memory = ratios(
        {m: r["step_ms"] for m, r in by_model.items()},
        {m: r["step_peak_mib"] for m, r in by_model.items()},
    )
    return {"baseline": BASELINE, "speed": speed, "memory": memory}


def table2_markdown(report: dict[str, Any]) -> str:
    """The Speed / Mem table of a `--table2` report, ours beside the paper's."""
    from mega_lra.models import catalog
    from mega_lra.results.paper import load_paper

    paper, m, a = load_paper(), report["machine"], report["args"]
    s = report["table2"]
    by_model = table2_rows(report["rows"])
    base = by_model.get(BASELINE, {})
    lines = [
        "# Table 2: training speed and peak memory relative to XFM‡",
        "",
        f"{report['device']}; torch {m['torch']}; one training step (forward + backward + "
        f"optimiser, Lightning module) of each model's Text recipe, L = "
        f"{base.get('length', '?')}, batch {a['batch']}; median of {a['steps']} steps after "
        f"{a['warmup']} warm-up; memory: {base.get('memory_kind', '?')}; git {m.get('git_sha')}",
        "",
        "| model | experiment | L | params | step ms | peak MiB | Speed (ours) | Mem (ours) "
        "| Speed (paper) | Mem (paper) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        model = r["experiment"].split("/")[1]
        name = catalog.model_label(model)
        ref = paper.speed_memory(model) or (None, None)
        ref_text = " | ".join(
            "" if v is None or v.value is None else f"{v.value:.{digits}f}×"
            for v, digits in zip(ref, (1, 2))  # as Table 2 prints them
        )
        if "step_ms" not in r:
            note = r.get("skipped") or r.get("error", "")
            lines.append(f"| {name} | {r['experiment']} | | | | | {note} | | {ref_text} |")
            continue
        speed, memory = s["speed"].get(model), s["memory"].get(model)
        lines.append(
            f"| {name} | {r['experiment']} | {r['length']} | {r['params']:,} | "
            f"{r['step_ms']:.1f} | {r['step_peak_mib']:,.1f} | "
            + ("" if speed is None else f"{speed:.2f}×")
            + " | "
            + ("" if memory is None else f"{memory:.2f}×")
            + f" | {ref_text} |"
        )
    if not a.get("isolate", True):
        lines += [
            "",
            "Note: --no-isolate: every case ran in one process; CPU peaks not comparable.",
        ]
    lines += [
        "",
        "Speed = XFM‡'s step time / the model's; Mem = the model's peak / XFM‡'s, both measured "
        f"here on {report['device']}. The paper's: Table 2 (Reformer, Linformer, BigBird and "
        "Performer copied from LRA's Table 2, TPU v3 4x4, batch 32; Luna-256 presumably from the "
        "Luna paper; the rest measured by the Mega authors). `python -m mega_lra.table --table "
        "lra --bench <this file's bench_training.json>` puts ours into Table 2.",
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
    parser.add_argument(
        "--table2",
        action="store_true",
        help="Table 2's Speed / Mem: one training step of each Table 2 model's Text recipe "
        "(lra/<model>/text), relative to XFM‡ (transformer), on this device",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="--table2: only these Table 2 models (XFM‡, the reference, is always measured)",
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each case in a fresh worker process (default; CPU peak RSS is then the case's "
        "own); --no-isolate: all in this process (smoke tests)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="batch size (default 1; --table2 on CUDA: the XFM‡ Text recipe's per-device batch)",
    )
    parser.add_argument(
        "--length",
        type=int,
        default=None,
        help="sequence length (task.max_length=N; default: each recipe's own; --table2: 4096)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="every model at the speed benchmark's tiny sizes (smoke tests)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for every experiment (repeatable)",
    )
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
    from tqdm import tqdm

    from mega_lra.models import catalog

    if ns.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    threads = ns.threads or torch.get_num_threads()
    try:
        out = run_dir(ns.out, "bench_training", ("bench_training.json",))
    except FileExistsError as err:
        parser.error(str(err))
    demo_names = demos()
    rows: list[dict[str, Any]] = []
    if ns.table2:
        recipes_here = set(catalog.experiment_names("lra/"))
        ns.experiments = []
        chosen = table2_models()
        if ns.models:
            unknown = sorted(set(ns.models) - set(chosen))
            if unknown:
                parser.error(f"--models {unknown}: not a Table 2 model ({', '.join(chosen)})")
            chosen = [m for m in chosen if m == BASELINE or m in ns.models]
        for model in chosen:
            exp = f"lra/{model}/text"
            if exp not in recipes_here:
                why = f"no recipe yet (conf/experiment/{exp}.yaml)"
            elif model not in catalog.model_names():
                why = f"no model yet (conf/model/{model}.yaml)"
            else:
                ns.experiments.append(exp)
                continue
            rows.append({"experiment": exp, "skipped": why})
            print(f"[bench-train] skip {exp}: {why}", flush=True)
        if f"lra/{BASELINE}/text" not in ns.experiments:
            parser.error(f"--table2: no recipe lra/{BASELINE}/text for XFM‡, the 1x reference")
        if ns.batch is None and ns.device == "cuda" and not ns.tiny:
            from mega_lra.training.config import compose

            ns.batch = int(compose([f"experiment=lra/{BASELINE}/text"]).loader.batch_size)
    ns.batch = ns.batch or 1
    ns.experiments = ns.experiments or demo_names + recipes()
    overrides = list(ns.override)
    if ns.table2 and not ns.length and not ns.tiny:
        ns.length = TABLE2_LENGTH  # every model at the same 4K (LRA's Text recipe reads 1K)
    if ns.length:
        overrides.append(f"task.max_length={ns.length}")
    cases = []
    for exp in ns.experiments:
        if exp in ns.skip:
            continue
        base = dict(
            experiment=exp, batch=ns.batch, steps=ns.steps, warmup=ns.warmup, device=ns.device,
            dtype=ns.dtype, threads=threads, overrides=overrides, tiny=ns.tiny,
            extras=not ns.table2,
        )  # fmt: skip
        cases.append(base)
        if ns.loader and exp in demo_names:
            cases.append({**base, "real_data": True})
    info = machine(ns.device, threads)
    info["device_name"] = info.get("gpu") or f"{info['cpu']}, {threads} threads"
    started = time.perf_counter()
    bar = tqdm(cases, desc="bench-train", unit="case", file=sys.stderr, dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case["experiment"])
        try:
            row = run_in_worker("train_step", case) if ns.isolate else _in_process(case)
        except RuntimeError as err:
            row = {**case, "error": str(err)}
            bar.write(f"[bench-train] {case['experiment']}: failed: {err}")
        else:
            extra = f", backbone {row['backbone_ms']:.1f} ms" if "backbone_ms" in row else ""
            peak = f", peak {row['step_peak_mib']:,.1f} MiB" if "step_peak_mib" in row else ""
            bar.write(
                f"[bench-train] {case['experiment']:32s} step {row['step_ms']:9.1f} ms{extra}"
                f"{peak} ({time.perf_counter() - started:.0f} s)"
            )
        rows.append(row)
    if ns.table2:  # the paper's row order, skipped models in their place
        order = {f"lra/{m}/text": i for i, m in enumerate(table2_models())}
        rows.sort(key=lambda r: order.get(r["experiment"], len(order)))
    report = {
        "machine": info,
        "device": device_name(info, ns.dtype),
        "args": vars(ns),
        "rows": rows,
        "total_seconds": time.perf_counter() - started,
    }
    text = markdown(report)
    if ns.table2:
        report["table2"] = table2_summary(rows)
        text = table2_markdown(report) + "\n" + text
    write_json(out / "bench_training.json", report)
    write_text(out / "bench_training.md", text)
    print(text)
    print(f"[bench-train] wrote {out}/bench_training.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
