"""Speed and memory benchmark of any model in `conf/model/` at the sizes of its LRA recipe
(`python -m mega_lra.bench`, `make bench`), on CPU or CUDA, beside transformers' Mega.

A row is a model's **backbone** (`forward(x, mask)`, x = (B, L, d) random embeddings, every
position real), built as training builds it: the model composed from `conf/` at a size, then
`mega_lra.models.build_classifier(cfg.model, task)` with the task's length set to the row's
length, and `.backbone` of it. Sizes:
- `--size text`: the model's LRA Text recipe (`experiment=lra/<model>/text`; a model without one:
  its own file's sizes on `task=text` with the Text recipe's batch, `+recipe=lra/text`);
- `--size pathx`: likewise with the Path-X recipe (`lra/<model>/pathx`);
- `--size tiny`: the Text composition with the small fields of `TINY` (for smoke tests).
Dropout is off in every row (each float `model.*dropout*` field set to 0).

Row names (`--models`): a model name (`mega_chunk`, `transformer`, any file of `conf/model/`);
`<model>_math`: that model with SDPA restricted to its math kernel (explicit L x L attention, the
way fairseq's XFM‡ ran); `hf_<model>`: transformers 4.x `MegaModel` (on token ids) with the
`MegaConfig` of that Mega model, through the reference env (`tools/hf_reference/`) on CPU, or
imported from `--hf-site DIR` (a folder holding transformers 4.x installed from wheels) on any
device. Default: every model with LRA recipes, `hf_<model>` for the Mega ones, `<model>_math` for
the others with full softmax attention.

For every (row, length) it measures, after warm-up calls:
- forward time (eval mode, no grad) and forward+backward time (train mode, loss = mean(y^2)):
  medians of `--repeats` calls, synchronised on GPU; the first (warm-up) call's time too, and
  with `--compile` the compilation time (first call minus the median) apart from the step time;
- tokens/s of forward+backward, and peak memory of the training step: CUDA max allocated on GPU,
  peak RSS minus the RSS before the first call on CPU;
- the FLOP floor: the step's multiply-adds (projections, FFN, attention; the FFT EMA is not
  counted; Mega and the Transformer only) at `--peak-gflops` (160 = fp32 GEMM on 2 threads of
  the reference CPU), and the achieved fraction floor / time.
Cases run length by length, alternating rows, so slow drifts of the machine hit every row. On
CPU each case runs in a fresh worker process (`mega_lra.bench.worker`, so that peak RSS is the
case's own); on CUDA in this process (memory is the allocator's peak, reset per case). A length
is skipped when the row's last measured one extrapolates past the limits: quadratically for a
model whose `describe()` says full attention (`chunk_size` -1 and an `attention_activation`),
linearly otherwise.

Outputs in the run dir (default `runs/bench/<timestamp>/`): `bench.json` (every number and the
machine), `bench.md` (the table, Table-2-style ratios at 4K, the GPU targets) and `bench.png`
(time and memory vs length, log-log); see `mega_lra.bench.report`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mega_lra.atomic_files import write_json, write_text
from mega_lra.bench import report
from mega_lra.bench.report import HF_PREFIX, MATH_SUFFIX
from mega_lra.bench.worker import MIB, current_rss, machine, peak_rss, run_dir, run_in_worker

SIZES = ("text", "pathx", "tiny")
DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384)
# the tiny size: these fields, where the model has them (shared names mean the same in every
# model), and attention chunks of TINY_CHUNK where the model chunks
TINY = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    ffn_hidden_size=32,
    qkv_size=16,  # the attention baselines' Q/K/V width (LRA's qkv_dim)
    intermediate_size=32,
    nffn_hidden_size=32,
    shared_representation_size=8,
    ema_projection_size=4,
    truncation=16,
    d_state=4,  # S4's state size N
    n_ssm=2,  # S4's copies of (Lambda, P, B): a divisor of the tiny hidden_size
)
TINY_CHUNK = 16


# ------------------------------------------------------------------------------ the rows
@dataclass(frozen=True)
class Row:
    """A row of the table: `name` as given, the `conf/model/` model it is built from, and its
    kind: `ours` (the model), `math` (SDPA's math kernel), `hf` (transformers' Mega)."""

    name: str
    model: str
    kind: str


def parse_row(name: str) -> Row:
    """`mega`, `transformer_math`, `hf_mega_chunk`, ... -> Row; ValueError naming the choices."""
    from mega_lra.models import catalog

    models = catalog.model_names()
    if name in models:
        return Row(name, name, "ours")
    if name.startswith(HF_PREFIX) and name[len(HF_PREFIX) :] in models:
        return Row(name, name[len(HF_PREFIX) :], "hf")
    if name.endswith(MATH_SUFFIX) and name[: -len(MATH_SUFFIX)] in models:
        return Row(name, name[: -len(MATH_SUFFIX)], "math")
    raise ValueError(
        f"--models {name}: not a model of conf/model/ (one of {models}), nor hf_<model> or "
        "<model>_math of one"
    )


def recipe(size: str) -> str:
    """The LRA task whose recipe gives a size's fields and batch."""
    return "pathx" if size == "pathx" else "text"


@cache
def _composed(model: str, size: str) -> Any:
    from mega_lra.models import catalog
    from mega_lra.training.config import compose

    experiment = f"lra/{model}/{recipe(size)}"
    if experiment in catalog.experiment_names("lra/"):
        return compose([f"experiment={experiment}"])
    return compose([f"+recipe=lra/{recipe(size)}", f"model={model}"])


def compose_model(
    model: str,
    size: str,
    attention_backend: str | None = None,
    attention_block_size: int | None = None,
) -> Any:
    """The training config of `model` at `size` (a copy: the caller may change it), dropout off;
    `attention_backend` / `attention_block_size` (0 = never block) set on Mega models."""
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(_composed(model, size)))
    node = cfg.model
    with open_dict(node):
        for key in list(node.keys()):
            if "dropout" in key and isinstance(node[key], float):
                node[key] = 0.0
        if size == "tiny":
            shrink(node)
        if is_mega(node):
            if attention_backend:
                node.attention_backend = attention_backend
            if attention_block_size is not None:
                node.attention_block_size = attention_block_size or None
    return cfg


def shrink(node: Any) -> None:
    """Set a model node (open for writing) to the tiny size: the fields of `TINY` it has, and
    attention chunks of `TINY_CHUNK` where it chunks."""
    for key, value in TINY.items():
        if key in node:
            node[key] = value
    if chunk_size(node):
        node.chunk_size = TINY_CHUNK


def is_mega(node: Any) -> bool:
    """Whether a model node's backbone is Mega (transformers' Mega can run its sizes)."""
    from mega_lra.models.classifier import import_backbone
    from mega_lra.models.mega import MegaBackbone

    return issubclass(import_backbone(node.backbone), MegaBackbone)


def chunk_size(node: Any) -> int | None:
    """The attention chunk of a model node, None when it attends over the whole sequence."""
    chunk = node.get("chunk_size")
    if node.get("use_chunking", True) and isinstance(chunk, int) and chunk > 0:
        return chunk
    return None


def build(model: str, size: str, length: int, **options: Any) -> tuple[Any, Any, SimpleNamespace]:
    """(classifier, composed config, task facts) of `model` at `size` for sequences of `length`:
    the task's facts with its `max_length` set to `length`."""
    from hydra.utils import instantiate

    from mega_lra.models import build_classifier
    from mega_lra.models.classifier import TASK_FACTS

    cfg = compose_model(model, size, **options)
    if "max_positions" in cfg.model and (cfg.model.max_positions or 0) < length:
        # a recipe's own bias table (Mega's Text: 4002 positions) grows to the measured length
        cfg.model.max_positions = None
    task = instantiate(cfg.task)
    facts = SimpleNamespace(**{key: getattr(task, key) for key in TASK_FACTS})
    facts.max_length = length
    return build_classifier(cfg.model, facts), cfg, facts


def label(name: str, size: str = "text") -> str:
    """How the table names a row: the model's `label`, its chunk at this size, the variant."""
    from mega_lra.models import catalog

    row = parse_row(name)
    text = catalog.model_label(row.model)
    chunk = chunk_size(compose_model(row.model, size).model)
    if chunk:
        text += f" (C={chunk})"
    if row.kind == "math":
        text += ", math attention"
    return f"transformers {text}" if row.kind == "hf" else text


def default_rows(size: str) -> list[str]:
    """Every model with LRA recipes; `hf_<model>` for the Mega ones; `<model>_math` for the
    others whose `describe()` says full softmax attention."""
    from mega_lra.models import catalog

    rows, extra = [], []
    for model in catalog.recipe_models("lra"):
        rows.append(model)
        classifier, cfg, _ = build(model, "tiny", TINY_CHUNK)
        info = classifier.describe()
        if is_mega(cfg.model):
            extra.append(HF_PREFIX + model)
        elif info.get("attention_activation") == "softmax" and info.get("chunk_size") == -1:
            extra.append(model + MATH_SUFFIX)
    return rows + extra


def is_quadratic(info: dict[str, Any] | None) -> bool:
    """Full attention, as the model describes itself (`chunk_size` -1, an attention)."""
    info = info or {}
    return info.get("chunk_size") == -1 and "attention_activation" in info


def step_macs(backbone: Any, length: int, batch: int) -> float | None:
    """Multiply-adds of one forward pass of a Mega or Transformer backbone (GEMM-shaped work
    only: projections, FFN, attention); None for other backbones."""
    from mega_lra.hf.configuration import MegaConfig
    from mega_lra.models.transformer import TransformerBackbone

    config = getattr(backbone, "config", None)
    if isinstance(config, MegaConfig):
        d, h = config.hidden_size, config.intermediate_size
        z, f = config.shared_representation_size, config.nffn_hidden_size
        chunk = config.effective_chunk_size
        span = min(chunk, length) if chunk > 0 else length
        per_token = d * h + d * (z + h + 2 * d) + h * d + 2 * d * f + span * (z + h)
        layers = config.num_hidden_layers
    elif isinstance(backbone, TransformerBackbone):
        d, f = backbone.hidden_size, backbone.layers[0].fc1.out_features
        per_token = 4 * d * d + 2 * d * f + 2 * length * d
        layers = len(backbone.layers)
    else:
        return None
    return float(per_token) * layers * length * batch


def hf_fields(backbone: Any, vocab_size: int) -> dict[str, Any]:
    """transformers' `MegaConfig` fields of a Mega backbone (its config.json)."""
    fields = backbone.config.to_dict()
    fields.update(vocab_size=vocab_size)
    return fields


# ------------------------------------------------------------------------------ the worker
def _build_case(case: dict[str, Any]) -> tuple[Any, str, dict[str, Any], float | None, tuple]:
    """(module, impl, model_info, forward MACs, input) of a case; input = ("embeddings", d)
    for our backbones, ("ids", vocab) for transformers' Mega."""
    row = parse_row(case["model"])
    options = dict(
        attention_backend=case.get("attention_backend"),
        attention_block_size=case.get("attention_block_size"),
    )
    classifier, cfg, task = build(row.model, case["size"], case["length"], **options)
    backbone = classifier.backbone
    info = classifier.describe()
    macs = step_macs(backbone, case["length"], case["batch"])
    if row.kind != "hf":
        impl = classifier.backbone_path
        if getattr(backbone, "config", None) is not None and row.kind == "ours":
            impl += f" (attention_backend={getattr(backbone.config, 'attention_backend', '-')})"
        return backbone, impl, info, macs, ("embeddings", classifier.hidden_size)
    site = case.get("hf_site")
    if not site:
        raise RuntimeError("transformers' Mega in-process needs --hf-site")
    if site not in sys.path:
        sys.path.insert(0, site)
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.MegaConfig(**hf_fields(backbone, task.vocab_size))
    model = transformers.MegaModel(config, add_pooling_layer=False)
    impl = f"transformers-{transformers.__version__}"
    return model, impl, info, macs, ("ids", task.vocab_size)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one (row, length) in this process; `case` is what `main` sends a worker."""
    import torch

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    device = torch.device(case["device"])
    dtype = getattr(torch, case["dtype"])
    model, impl, info, macs, (kind, width) = _build_case(case)
    autocast = dtype in (torch.bfloat16, torch.float16)
    model = model.to(device) if autocast else model.to(device=device, dtype=dtype)
    target = torch.compile(model) if case.get("compile") else model
    batch, length = case["batch"], case["length"]
    multiple = int(getattr(model, "pad_multiple", 0) or 0)
    if multiple and length % multiple:
        length = -(-length // multiple) * multiple  # as the collator pads
    if kind == "ids":
        ids = torch.randint(3, width, (batch, length), device=device)

        def run() -> Any:
            return target(ids).last_hidden_state

    else:
        x = torch.randn(batch, length, width, device=device, dtype=torch.float32)
        x = x if autocast else x.to(dtype)
        mask = torch.ones(batch, length, dtype=torch.bool, device=device)

        def run() -> Any:
            return target(x, mask)

    cuda = device.type == "cuda"

    def kernels():
        if parse_row(case["model"]).kind != "math":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])  # explicit L x L attention, as fairseq's XFM

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=autocast), kernels():
            run()

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast), kernels():
            y = run()
        with kernels():
            y.float().square().mean().backward()

    def timed(fn, warmup: int, repeats: int) -> tuple[list[float], float | None]:
        first = None
        for i in range(warmup):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i == 0:
                first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return times, first

    result: dict[str, Any] = dict(case)
    result.update(impl=impl, model_info=info, macs=macs)
    if length != case["length"]:
        result["padded_length"] = length
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = current_rss()
    compile_s = 0.0
    if case["forward"]:
        model.eval()
        times, first = timed(forward, case["warmup"], case["repeats"])
        result["forward_ms"] = 1000 * statistics.median(times)
        result["forward_ms_all"] = [round(1000 * t, 3) for t in times]
        if first is not None:
            result["forward_first_ms"] = 1000 * first
            compile_s += first - statistics.median(times)
    model.train()
    times, first = timed(train_step, case["warmup"], case["repeats"])
    result["train_ms"] = 1000 * statistics.median(times)
    result["train_ms_all"] = [round(1000 * t, 3) for t in times]
    if first is not None:
        result["train_first_ms"] = 1000 * first
        compile_s += first - statistics.median(times)
    if case.get("compile"):
        result["compile_s"] = compile_s
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss()
    result["peak_mib"] = (peak - baseline) / MIB
    result["memory_kind"] = "cuda max allocated" if cuda else "peak RSS delta"
    if case.get("compile"):
        torch._dynamo.reset()  # drop the compiled graphs (and the weights they hold)
    return result


def run_hf_case(case: dict[str, Any], python: str, script: Path) -> dict[str, Any]:
    """Measure transformers' Mega in the reference env (CPU only)."""
    row = parse_row(case["model"])
    classifier, _, task = build(row.model, case["size"], case["length"])
    fields = hf_fields(classifier.backbone, task.vocab_size)
    cmd = [python, str(script), "--config", json.dumps(fields), "--seq-len", str(case["length"])]
    cmd += ["--batch-size", str(case["batch"]), "--threads", str(case["threads"])]
    cmd += ["--repeats", str(case["repeats"]), "--warmup", str(case["warmup"])]
    cmd += ["--mode", "both" if case["forward"] else "train", "--dtype", case["dtype"]]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    result = dict(case)
    result["train_ms"] = out["train_ms_median"]
    result["train_ms_all"] = out["train_ms_all"]
    if case["forward"]:
        result["forward_ms"] = out["forward_ms_median"]
        result["forward_ms_all"] = out["forward_ms_all"]
    result["peak_mib"] = out["train_peak_rss_delta_mib"]
    result["memory_kind"] = "peak RSS delta"
    result["impl"] = out.get("impl")
    result["model_info"] = classifier.describe()
    result["macs"] = step_macs(classifier.backbone, case["length"], case["batch"])
    return result


# ------------------------------------------------------------------------------ the driver
def _hf_runner(ns: argparse.Namespace) -> tuple[str, Path] | Path | str:
    """The folder of `--hf-site` (transformers 4.x imported in the worker), (python, script) of
    the reference env, or the reason there is neither."""
    if not ns.hf:
        return "disabled (--no-hf)"
    if ns.hf_site:
        site = Path(ns.hf_site).resolve()
        if not (site / "transformers" / "models" / "mega").is_dir():
            return f"--hf-site {site}: no transformers 4.x (with models/mega) in it"
        return site
    if ns.device != "cpu":
        return (
            "transformers' Mega on CUDA needs --hf-site DIR, a folder holding transformers 4.x "
            "installed from wheels (tools/gpu/check.sh does this)"
        )
    if ns.dtype not in ("float32", "float64"):
        return f"the reference script runs float32/float64, not {ns.dtype}; use --hf-site"
    try:  # development tooling beside the package (run from the repository root)
        from tools.hf_reference import envs as hf_reference
    except ImportError:
        hf_reference = None
    script = Path(ns.hf_script) if ns.hf_script else None
    if script is None and hf_reference is not None:
        script = hf_reference.scripts_dir() / "bench_model.py"
    if script is None or not script.is_file():
        return "tools/hf_reference/bench_model.py not found (the HF reference tools are missing)"
    if ns.hf_python:
        return ns.hf_python, script
    if hf_reference is None:
        return "tools/hf_reference/envs.py is missing; pass --hf-python"
    try:
        return str(hf_reference.ensure_env()), script
    except Exception as err:  # noqa: BLE001 - any build failure just drops the HF rows
        return f"the reference env could not be built: {str(err).splitlines()[0]}"


def _in_process(case: dict[str, Any]) -> dict[str, Any]:
    """run_case here (CUDA: no start-up per case; memory is the allocator's per-case peak)."""
    import torch

    try:
        return run_case(case)
    except Exception as err:  # noqa: BLE001 - a failed case becomes a note in its row
        kind = "out of memory" if isinstance(err, torch.cuda.OutOfMemoryError) else "failed"
        message = f"{kind}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    raise RuntimeError(message)


def _predicted(rows: list[dict[str, Any]], model: str, length: int) -> tuple[float, float] | None:
    """(seconds, MiB) of the next length, extrapolated from the row's last measured one:
    quadratic for full attention (as the model describes itself), else linear."""
    done = [r for r in rows if r["model"] == model and "train_ms" in r]
    if not done:
        return None
    last = done[-1]
    power = 2 if is_quadratic(last.get("model_info")) else 1
    growth = (length / last["length"]) ** power
    return last["train_ms"] / 1000 * growth, max(last["peak_mib"], 1.0) * growth


def _measure_cell(
    ns: argparse.Namespace,
    hf: tuple[str, Path] | str | None,
    rows: list[dict[str, Any]],
    model: str,
    length: int,
    round_index: int,
) -> dict[str, Any] | None:
    """Measure (row, length) once more and merge it into its row of `rows` (medians over
    rounds, all raw times kept). Returns the row, or None when skipped or failed."""
    row = report.cell(rows, model, length) if round_index else None
    if round_index and row is None:
        return None  # skipped or failed in the first round
    case = dict(
        model=model,
        label=ns.labels[model],
        length=length,
        task_length=ns.task_length,
        batch=ns.batch_size,
        dtype=ns.dtype,
        device=ns.device,
        threads=ns.threads,
        repeats=ns.repeats,
        warmup=ns.warmup,
        forward=ns.forward,
        size=ns.size,
        attention_block_size=ns.attention_block_size,
        attention_backend=ns.attention_backend,
        compile=ns.compile and not model.startswith(HF_PREFIX),
        hf_site=str(hf) if isinstance(hf, Path) else None,
    )
    elapsed = time.perf_counter() - ns.started
    if ns.time_budget is not None and elapsed > ns.time_budget:
        case["skipped"] = f"--time-budget {ns.time_budget:g} s spent ({elapsed:.0f} s)"
        if row is None:  # a later round keeps the earlier rounds' numbers
            rows.append(case)
        print(f"[bench] {model:14s} L={length:6d} skipped: {case['skipped']}", flush=True)
        return None
    guess = None if round_index else _predicted(rows, model, length)
    if guess and (guess[0] > ns.max_step_seconds or guess[1] > ns.max_memory_gb * 1024):
        case["skipped"] = (
            f"predicted {guess[0]:.0f} s / {guess[1] / 1024:.1f} GB per step, over "
            f"--max-step-seconds {ns.max_step_seconds:g} / --max-memory-gb {ns.max_memory_gb:g}"
        )
        rows.append(case)
        print(f"[bench] {model:14s} L={length:6d} skipped: {case['skipped']}", flush=True)
        return None
    case["load_before"] = os.getloadavg()[0]
    try:
        if model.startswith(HF_PREFIX) and isinstance(hf, tuple):
            new = run_hf_case(case, *hf)
        else:
            new = run_in_worker("speed", case) if ns.isolate else _in_process(case)
    except RuntimeError as err:
        if row is not None:  # a later round failed: keep the earlier rounds
            row.setdefault("errors", []).append(str(err))
            return row
        case["error"] = str(err)
        rows.append(case)
        print(f"[bench] {model:14s} L={length:6d} failed: {err}", flush=True)
        return None
    if row is None:
        row = new
        row["rounds"] = {"train_ms": [], "forward_ms": [], "peak_mib": [], "load_before": []}
        rows.append(row)
    for key in row["rounds"]:
        if key in new:
            row["rounds"][key].append(new[key])
    if "compile_s" in new:
        row.setdefault("compile_s_all", []).append(new["compile_s"])
    if round_index:
        row["train_ms_all"] += new["train_ms_all"]
        if "forward_ms_all" in new:
            row["forward_ms_all"] += new["forward_ms_all"]
    row["train_ms"] = statistics.median(row["rounds"]["train_ms"])
    if row["rounds"]["forward_ms"]:
        row["forward_ms"] = statistics.median(row["rounds"]["forward_ms"])
    row["peak_mib"] = statistics.median(row["rounds"]["peak_mib"])
    row["load_before"] = max(row["rounds"]["load_before"])
    row["tokens_per_s"] = ns.batch_size * length / (row["train_ms"] / 1000)
    if row.get("macs"):
        row["train_gflop"] = 3 * 2 * row["macs"] / 1e9
        if ns.peak_gflops:
            row["floor_ms"] = 1000 * row["train_gflop"] / ns.peak_gflops
            row["floor_fraction"] = row["floor_ms"] / row["train_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mega_lra.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="ROW",
        help="any model of conf/model/, hf_<model> (transformers' Mega at a Mega model's "
        "sizes), <model>_math (SDPA's math kernel); default: every model with LRA recipes, "
        "with their hf_ and _math rows",
    )
    parser.add_argument("--lengths", nargs="+", type=int, default=list(DEFAULT_LENGTHS))
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: 1 on CPU, the recipe's per-device batch on CUDA (tiny: 1)",
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole alternating sweep; each cell reports the median over rounds",
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--no-forward", dest="forward", action="store_false", help="time forward+backward only"
    )
    parser.add_argument(
        "--size",
        default="text",
        choices=SIZES,
        help="text: each model's LRA Text recipe; pathx: its Path-X recipe; tiny: the Text "
        "composition at small sizes, for smoke tests",
    )
    parser.add_argument(
        "--max-step-seconds",
        type=float,
        default=20.0,
        help="skip a length whose predicted fwd+bwd step exceeds this",
    )
    parser.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="skip a length whose predicted peak memory exceeds this (default 10 on CPU, 90%% "
        "of the card's memory on CUDA)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: start no new case after this (the rest are listed as skipped)",
    )
    parser.add_argument(
        "--attention-backend",
        default=None,
        choices=("auto", "reference", "sdpa", "flex"),
        help="attention_backend of the Mega rows (default: the model's, auto)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the models (not transformers'); compile time reported apart",
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each case in a fresh worker process (default: on CPU, for peak RSS; not on CUDA)",
    )
    parser.add_argument(
        "--attention-block-size",
        type=int,
        default=None,
        help="attention_block_size of the Mega rows (0: never block)",
    )
    parser.add_argument(
        "--peak-gflops",
        type=float,
        default=None,
        help="GEMM rate for the floor (default 160 on CPU, none on GPU)",
    )
    parser.add_argument(
        "--hf",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include transformers' Mega rows (reference env or --hf-site)",
    )
    parser.add_argument("--hf-python", default=None, help="python of a transformers 4.x env")
    parser.add_argument("--hf-script", default=None, help="path of bench_model.py")
    parser.add_argument(
        "--hf-site",
        default=None,
        help="folder with transformers 4.x (pip install --target): its Mega runs in-process, "
        "on any device and dtype",
    )
    parser.add_argument("--out", default=None, help="run dir (default runs/bench/<timestamp>)")
    ns = parser.parse_args(argv)

    import torch

    models = list(ns.models or default_rows(ns.size))
    try:
        parsed = [parse_row(m) for m in models]
    except ValueError as err:
        parser.error(str(err))
    for row in parsed:
        if row.kind == "hf" and not is_mega(compose_model(row.model, ns.size).model):
            parser.error(f"--models {row.name}: {row.model} is not a Mega model")
    if ns.device == "auto":
        ns.device = "cuda" if torch.cuda.is_available() else "cpu"
    if ns.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if ns.threads is None:
        ns.threads = torch.get_num_threads()
    if ns.peak_gflops is None and ns.device == "cpu":
        ns.peak_gflops = 160.0
    recipe_cfg = compose_model(parsed[0].model, ns.size)
    ns.task_length = int(recipe_cfg.task.max_length)
    if ns.batch_size is None:
        cuda_batch = 1 if ns.size == "tiny" else int(recipe_cfg.loader.batch_size)
        ns.batch_size = cuda_batch if ns.device == "cuda" else 1
    if ns.max_memory_gb is None:
        ns.max_memory_gb = 10.0
        if ns.device == "cuda":
            ns.max_memory_gb = 0.9 * torch.cuda.get_device_properties(0).total_memory / 2**30
    if ns.isolate is None:
        ns.isolate = ns.device == "cpu"
    try:
        out = run_dir(ns.out, "bench", ("bench.json", "bench.md", "bench.png"))
    except FileExistsError as err:
        parser.error(str(err))

    notes: list[str] = []
    hf = _hf_runner(ns) if any(r.kind == "hf" for r in parsed) else None
    if isinstance(hf, str):
        notes.append(f"transformers' Mega rows skipped: {hf}")
        print(f"[bench] {notes[-1]}", flush=True)
        models = [r.name for r in parsed if r.kind != "hf"]
    ns.models = models
    ns.labels = {m: label(m, ns.size) for m in models}

    rows: list[dict[str, Any]] = []
    info = machine(ns.device, ns.threads)
    started = ns.started = time.perf_counter()

    def write(final: bool) -> None:
        """bench.json and bench.md after every case (a run killed midway keeps its numbers);
        the plot at the end."""
        result = dict(
            machine=info,
            args={k: v for k, v in vars(ns).items() if k not in ("started", "labels")},
            notes=notes,
            rows=rows,
            summary=report.summarise(rows),
            total_seconds=time.perf_counter() - started,
            complete=final,
        )
        write_json(out / "bench.json", result)
        write_text(out / "bench.md", report.markdown(result))
        if final:
            where = info.get("gpu") or info["cpu"]
            title = f"{where}, {ns.dtype}, {ns.size} config, batch {ns.batch_size}"
            report.plot(rows, out / "bench.png", title)

    for round_index in range(ns.rounds):
        for length in sorted(ns.lengths):
            for model in models:
                row = _measure_cell(ns, hf, rows, model, length, round_index)
                write(final=False)
                if row is None:
                    continue
                fwd = f"fwd {row['forward_ms']:8.1f} ms  " if "forward_ms" in row else ""
                floor = f"  {row['floor_fraction']:.2f} of floor" if "floor_fraction" in row else ""
                elapsed = time.perf_counter() - started
                print(
                    f"[bench] {model:14s} L={length:6d} {fwd}fwd+bwd {row['train_ms']:8.1f} ms  "
                    f"peak {row['peak_mib']:8.1f} MiB{floor}  ({elapsed:.0f} s)",
                    flush=True,
                )
    write(final=True)
    print((out / "bench.md").read_text())
    print(f"[bench] wrote {out}/bench.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
