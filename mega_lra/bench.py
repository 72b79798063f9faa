"""Speed and memory benchmark: Mega, Mega-chunk, the Transformer baseline and transformers' Mega
on the paper's LRA Text configuration (`python -m mega_lra.bench`, `make bench`), on CPU or CUDA.

For every (model, length) it measures, after warm-up calls:
- forward time (eval mode, no grad) and forward+backward time (train mode, loss = mean(y^2)):
  medians of `--repeats` calls, synchronised on GPU; the first (warm-up) call's time too, and
  with `--compile` the compilation time (first call minus the median) apart from the step time;
- tokens/s of forward+backward, and peak memory of the training step: CUDA max allocated on GPU,
  peak RSS minus the RSS before the first call on CPU;
- the FLOP floor: the step's multiply-adds (projections, FFN, attention; the FFT EMA is not
  counted) at `--peak-gflops` (160 = fp32 GEMM on 2 threads of the reference CPU), and the
  achieved fraction floor / time.
Cases run length by length, alternating models, so slow drifts of the machine hit every row. On
CPU each case runs in a fresh worker process (so that peak RSS is the case's own); on CUDA in
this process (memory is the allocator's peak, reset per case; no CUDA start-up per case).

Rows: `mega_chunk`, `mega` (ours; `--attention-backend` picks the softmax kernel), `transformer`
(XFM‡ through SDPA: flash attention on a card that has it), `transformer_math` (XFM‡ with SDPA's
math kernel: explicit L x L attention, the way the paper ran it), `hf_mega_chunk`, `hf_mega`
(transformers 4.x Mega: through the reference env (`mega_lra.hf_reference`) on CPU, or imported
from `--hf-site DIR`, a folder holding transformers 4.x installed from wheels, on any device).
`--size text` is the LRA Text backbone (batch 25 per GPU in the recipe), `--size pathx` the Path-X
one (laplace, full attention or C = 4096; batch 2 per GPU), `--size tiny` a smoke-test model.

Outputs in the run dir (default `runs/bench/<timestamp>/`): `bench.json` (every number and the
machine), `bench.md` (the table, Table-2-style ratios at 4K, targets) and `bench.png` (time and
memory vs length, log-log).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
MODELS = ("mega_chunk", "mega", "transformer", "transformer_math", "hf_mega_chunk", "hf_mega")
QUADRATIC = ("mega", "transformer", "transformer_math", "hf_mega")
LABELS = {
    "mega_chunk": "Mega-chunk (C=128)",
    "mega": "Mega (full attention)",
    "transformer": "Transformer (XFM‡)",
    "transformer_math": "Transformer (XFM‡, math attention)",
    "hf_mega_chunk": "transformers Mega-chunk",
    "hf_mega": "transformers Mega (full)",
}
SIZES = ("text", "pathx", "tiny")
# per-GPU batch of each size's recipe (paper recipes: Text 25 x 2 accumulation, Path-X 2 x 8 x 8)
RECIPE_BATCH = {"text": 25, "pathx": 2, "tiny": 1}
DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384)
RATIO_LENGTH = 4096
PATHX_LENGTH = 16384
# issue 10's targets on the card (forward+backward at 4K, LRA Text config, bf16)
TARGET_VS_HF_SPEED, TARGET_VS_HF_MEMORY = 3.0, 0.5
TARGET_CHUNK_VS_XFM_SPEED = 5.5
TARGET_PATHX_GIB = 16.0


def label(model: str, size: str = "text") -> str:
    if model == "mega_chunk":
        return f"Mega-chunk (C={mega_fields(size, RATIO_LENGTH, True)['chunk_size']})"
    return LABELS[model]


# --------------------------------------------------------------------------- configurations
def mega_fields(size: str, length: int, chunked: bool) -> dict[str, Any]:
    """MegaConfig fields (HF names) of the LRA Text backbone (`size="text"`), the Path-X one
    (`"pathx"`: laplace, pre-norm BatchNorm, C = 4096 when chunked) or a tiny one."""
    fields: dict[str, Any] = dict(
        vocab_size=260,
        hidden_size=128,
        num_hidden_layers=4,
        intermediate_size=256,
        ema_projection_size=16,
        shared_representation_size=64,
        nffn_hidden_size=256,
        truncation=1024,
        relative_positional_bias="simple",
        normalization_type="scalenorm",
        normalize_before_mega=False,
        normalize_before_ffn=False,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        bidirectional=True,
        attention_activation="softmax",
        use_chunking=chunked,
        chunk_size=128 if chunked else -1,
        max_positions=max(length, 2048),
    )
    if size == "tiny":
        fields.update(
            hidden_size=16,
            num_hidden_layers=2,
            intermediate_size=32,
            ema_projection_size=4,
            shared_representation_size=8,
            nffn_hidden_size=32,
            truncation=16,
            chunk_size=16 if chunked else -1,
        )
    elif size == "pathx":  # mega_lra_pf128 (paper Table 8); syncbatchnorm = batchnorm on 1 GPU
        fields.update(
            hidden_size=64,
            intermediate_size=128,
            nffn_hidden_size=128,
            shared_representation_size=32,
            truncation=4096,
            attention_activation="laplace",
            normalization_type="batchnorm",
            normalize_before_mega=True,
            normalize_before_ffn=True,
            final_norm=True,
            chunk_size=4096 if chunked else -1,
            max_positions=max(length, PATHX_LENGTH),
        )
    return fields


def transformer_fields(size: str, length: int) -> dict[str, Any]:
    """TransformerConfig fields of XFM‡ on LRA Text (dropout off, as for Mega here)."""
    fields: dict[str, Any] = dict(
        max_positions=max(length, 4002), dropout_prob=0.0, attention_dropout_prob=0.0
    )  # the Text-size XFM‡ for `text` and `pathx` (the paper has no Path-X Transformer)
    if size == "tiny":
        fields.update(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_hidden_size=32
        )
    return fields


def step_macs(model: str, size: str, length: int, batch: int) -> float:
    """Multiply-adds of one forward pass (GEMM-shaped work only)."""
    if model.endswith("mega") or model.endswith("mega_chunk"):
        f = mega_fields(size, length, chunked=model.endswith("chunk"))
        d, h, z = f["hidden_size"], f["intermediate_size"], f["shared_representation_size"]
        span = min(f["chunk_size"], length) if f["use_chunking"] else length
        per_token = d * h + d * (z + h + 2 * d) + h * d + 2 * d * f["nffn_hidden_size"]
        per_token += span * (z + h)
        layers = f["num_hidden_layers"]
    else:
        from mega_lra.transformer import TransformerConfig

        c = TransformerConfig(**transformer_fields(size, length))
        d = c.hidden_size
        per_token = 4 * d * d + 2 * d * c.ffn_hidden_size + 2 * length * d
        layers = c.num_hidden_layers
    return float(per_token) * layers * length * batch


# ------------------------------------------------------------------------------ the worker
def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _build(case: dict[str, Any]):
    """(model, run(ids) -> hidden states, vocab size, impl) of a case."""
    name, length, size = case["model"], case["length"], case["size"]
    if name in ("transformer", "transformer_math"):
        from mega_lra.transformer import TransformerConfig, TransformerEncoder

        model = TransformerEncoder(TransformerConfig(**transformer_fields(size, length)))
        return model, model, model.config.vocab_size, "mega_lra.transformer"
    fields = mega_fields(size, length, chunked=name.endswith("chunk"))
    if name.startswith("hf_"):
        site = case.get("hf_site")
        if not site:
            raise RuntimeError("transformers' Mega in-process needs --hf-site")
        if site not in sys.path:
            sys.path.insert(0, site)
        import transformers

        transformers.logging.set_verbosity_error()
        config = transformers.MegaConfig(**fields)
        model = transformers.MegaModel(config, add_pooling_layer=False)
        impl = f"transformers-{transformers.__version__}"
    else:
        from mega_lra.configuration import MegaConfig
        from mega_lra.modeling_mega import MegaModel

        block = case.get("attention_block_size")
        if block is not None:  # 0 = never block
            fields["attention_block_size"] = block or None
        if case.get("attention_backend"):
            fields["attention_backend"] = case["attention_backend"]
        config = MegaConfig(**fields)
        model = MegaModel(config, add_pooling_layer=False)
        impl = f"mega_lra (attention_backend={config.attention_backend})"
    return model, lambda ids: model(ids).last_hidden_state, config.vocab_size, impl


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one (model, length) in this process; `case` is what `main` sends a worker."""
    import contextlib

    import torch

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    device = torch.device(case["device"])
    dtype = getattr(torch, case["dtype"])
    model, run, vocab, impl = _build(case)
    autocast = dtype in (torch.bfloat16, torch.float16)
    model = model.to(device) if autocast else model.to(device=device, dtype=dtype)
    if case.get("compile"):
        compiled = torch.compile(model)
        run = compiled if run is model else (lambda ids: compiled(ids).last_hidden_state)
    ids = torch.randint(3, vocab, (case["batch"], case["length"]), device=device)
    cuda = device.type == "cuda"

    def kernels():
        if case["model"] != "transformer_math":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])  # explicit L x L attention, as fairseq's XFM

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=autocast), kernels():
            run(ids)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast), kernels():
            y = run(ids)
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
    result["impl"] = impl
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _current_rss()
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
    peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss()
    result["peak_mib"] = (peak - baseline) / MIB
    result["memory_kind"] = "cuda max allocated" if cuda else "peak RSS delta"
    if case.get("compile"):
        torch._dynamo.reset()  # drop the compiled graphs (and the weights they hold)
    return result


def run_hf_case(case: dict[str, Any], python: str, script: Path) -> dict[str, Any]:
    """Measure transformers' Mega in the reference env (CPU only)."""
    fields = mega_fields(case["size"], case["length"], chunked=case["model"] == "hf_mega_chunk")
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
    try:
        from mega_lra import hf_reference
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
        return "mega_lra.hf_reference is missing; pass --hf-python"
    try:
        return str(hf_reference.ensure_env()), script
    except Exception as err:  # noqa: BLE001 - any build failure just drops the HF rows
        return f"the reference env could not be built: {str(err).splitlines()[0]}"


def _worker(case: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "mega_lra.bench", "--worker", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        if proc.returncode < 0 or "MemoryError" in proc.stderr or "out of memory" in proc.stderr:
            tail = [f"out of memory or killed (exit {proc.returncode}): {tail[0]}"]
        raise RuntimeError(tail[0])
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "CPU"


def _machine(ns: argparse.Namespace) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = dict(
        cpu=cpu_name(),
        cpu_count=os.cpu_count(),
        threads=ns.threads,
        torch=torch.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
    )
    if ns.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        info["git_sha"] = sha
    except (OSError, subprocess.CalledProcessError):
        info["git_sha"] = None
    return info


def _predicted(rows: list[dict[str, Any]], model: str, length: int) -> tuple[float, float] | None:
    """(seconds, MiB) of the next length, extrapolated from the model's last measured one."""
    done = [r for r in rows if r["model"] == model and "train_ms" in r]
    if not done:
        return None
    last = done[-1]
    power = 2 if model in QUADRATIC else 1
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
    """Measure (model, length) once more and merge it into its row of `rows` (medians over
    rounds, all raw times kept). Returns the row, or None when skipped or failed."""
    row = _cell(rows, model, length) if round_index else None
    if round_index and row is None:
        return None  # skipped or failed in the first round
    case = dict(
        model=model,
        length=length,
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
        compile=ns.compile and not model.startswith("hf_"),
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
        if model.startswith("hf_") and isinstance(hf, tuple):
            new = run_hf_case(case, *hf)
        else:
            new = _worker(case) if ns.isolate else _in_process(case)
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
    row["train_gflop"] = 3 * 2 * step_macs(model, ns.size, length, ns.batch_size) / 1e9
    if ns.peak_gflops:
        row["floor_ms"] = 1000 * row["train_gflop"] / ns.peak_gflops
        row["floor_fraction"] = row["floor_ms"] / row["train_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mega_lra.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(DEFAULT_LENGTHS))
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: 1 on CPU, the recipe's per-GPU batch on CUDA (text 25, pathx 2)",
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
        help="text: the paper's LRA Text config; pathx: the Path-X one; tiny: for smoke tests",
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
        help="MegaConfig.attention_backend of the Mega rows (default: the config's, auto)",
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
        help="MegaConfig.attention_block_size of the Mega rows (0: never block)",
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
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)

    if ns.worker is not None:
        print(json.dumps(run_case(json.loads(ns.worker))))
        return 0

    import torch

    if ns.device == "auto":
        ns.device = "cuda" if torch.cuda.is_available() else "cpu"
    if ns.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    if ns.threads is None:
        ns.threads = torch.get_num_threads()
    if ns.peak_gflops is None and ns.device == "cpu":
        ns.peak_gflops = 160.0
    if ns.batch_size is None:
        ns.batch_size = RECIPE_BATCH[ns.size] if ns.device == "cuda" else 1
    if ns.max_memory_gb is None:
        ns.max_memory_gb = 10.0
        if ns.device == "cuda":
            ns.max_memory_gb = 0.9 * torch.cuda.get_device_properties(0).total_memory / 2**30
    if ns.isolate is None:
        ns.isolate = ns.device == "cpu"
    out = Path(ns.out or Path("runs") / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bench.json", "bench.md", "bench.png"):
        if (out / name).exists():
            parser.error(f"--out {out}: {name} already exists; choose another run dir")

    models = list(ns.models)
    notes: list[str] = []
    hf = _hf_runner(ns) if any(m.startswith("hf_") for m in models) else None
    if isinstance(hf, str):
        notes.append(f"transformers' Mega rows skipped: {hf}")
        print(f"[bench] {notes[-1]}", flush=True)
        models = [m for m in models if not m.startswith("hf_")]

    rows: list[dict[str, Any]] = []
    machine = _machine(ns)
    started = ns.started = time.perf_counter()

    def write(final: bool) -> None:
        """bench.json and bench.md after every case (a run killed midway keeps its numbers);
        the plot at the end."""
        report = dict(
            machine=machine,
            args={k: v for k, v in vars(ns).items() if k not in ("worker", "started")},
            notes=notes,
            rows=rows,
            summary=summarise(rows),
            total_seconds=time.perf_counter() - started,
            complete=final,
        )
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "bench.md").write_text(markdown(report))
        if final:
            where = machine.get("gpu") or machine["cpu"]
            title = f"{where}, {ns.dtype}, {ns.size} config, batch {ns.batch_size}"
            plot(rows, out / "bench.png", ns.size, title)

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


# ---------------------------------------------------------------------------------- output
def _cell(rows: list[dict[str, Any]], model: str, length: int) -> dict[str, Any] | None:
    for r in rows:
        if r["model"] == model and r["length"] == length and "train_ms" in r:
            return r
    return None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios at 4K (paper Table 2: speed = t_XFM / t, memory = mem / mem_XFM; against XFM‡
    through SDPA and through math attention), vs transformers' Mega, Mega-chunk's
    time(16K) / time(1K), and the Path-X peak."""
    s: dict[str, Any] = {}
    for xfm_name in ("transformer", "transformer_math"):
        xfm = _cell(rows, xfm_name, RATIO_LENGTH)
        for model in ("mega_chunk", "mega", "hf_mega_chunk", "hf_mega"):
            r = _cell(rows, model, RATIO_LENGTH)
            if r and xfm:
                s[f"{model}_vs_{xfm_name}_speed"] = xfm["train_ms"] / r["train_ms"]
                s[f"{model}_vs_{xfm_name}_memory"] = r["peak_mib"] / max(xfm["peak_mib"], 1e-9)
    for ours, theirs in (("mega_chunk", "hf_mega_chunk"), ("mega", "hf_mega")):
        a, b = _cell(rows, ours, RATIO_LENGTH), _cell(rows, theirs, RATIO_LENGTH)
        if a and b:
            s[f"{ours}_vs_hf_speed"] = b["train_ms"] / a["train_ms"]
            s[f"{ours}_vs_hf_memory"] = a["peak_mib"] / max(b["peak_mib"], 1e-9)
    lengths = sorted({r["length"] for r in rows if r["model"] == "mega_chunk" and "train_ms" in r})
    if len(lengths) > 1:
        first, last = _cell(rows, "mega_chunk", lengths[0]), _cell(rows, "mega_chunk", lengths[-1])
        s["mega_chunk_scaling"] = {
            "lengths": [lengths[0], lengths[-1]],
            "time_ratio": last["train_ms"] / first["train_ms"],
            "length_ratio": lengths[-1] / lengths[0],
        }
    pathx = _cell(rows, "mega", PATHX_LENGTH)
    if pathx and pathx.get("size") == "pathx":
        s["pathx_peak_gib"] = pathx["peak_mib"] / 1024
        s["pathx_batch"] = pathx["batch"]
    return s


def targets(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, result, met) of issue 10 for the numbers this run has."""
    out = []

    def check(text, key, limit, at_least, fmt="{:.2f}×", extra=""):
        if key in s:
            ok = s[key] >= limit if at_least else s[key] <= limit
            out.append((text, fmt.format(s[key]) + extra, "yes" if ok else "no"))

    check(
        "Mega-chunk ≥ 3× transformers' Mega-chunk (fwd+bwd, 4K)",
        "mega_chunk_vs_hf_speed",
        TARGET_VS_HF_SPEED,
        True,
    )
    check(
        "Mega ≥ 3× transformers' Mega (fwd+bwd, 4K)", "mega_vs_hf_speed", TARGET_VS_HF_SPEED, True
    )
    check(
        "Mega-chunk peak ≤ 0.5× transformers'",
        "mega_chunk_vs_hf_memory",
        TARGET_VS_HF_MEMORY,
        False,
    )
    check("Mega peak ≤ 0.5× transformers'", "mega_vs_hf_memory", TARGET_VS_HF_MEMORY, False)
    flash = s.get("mega_chunk_vs_transformer_speed")
    check(
        "Mega-chunk ≥ 5.5× XFM‡ with math attention (paper's way)",
        "mega_chunk_vs_transformer_math_speed",
        TARGET_CHUNK_VS_XFM_SPEED,
        True,
        extra="" if flash is None else f" (vs XFM‡ with SDPA/flash: {flash:.2f}×)",
    )
    if "pathx_peak_gib" in s:
        check(
            f"Path-X (Mega, laplace, L = {PATHX_LENGTH}, batch {s['pathx_batch']}) fwd+bwd "
            f"≤ {TARGET_PATHX_GIB:g} GiB",
            "pathx_peak_gib",
            TARGET_PATHX_GIB,
            False,
            fmt="{:.2f} GiB",
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m, a, rows, s = report["machine"], report["args"], report["rows"], report["summary"]
    size = a.get("size", "text")
    where = m.get("gpu") or f"{m['cpu']}, {m['threads']} threads"
    extra = []
    if a.get("attention_backend"):
        extra.append(f"attention_backend={a['attention_backend']}")
    if a.get("compile"):
        extra.append("torch.compile")
    lines = [
        "# mega-lra benchmark",
        "",
        f"{where}; torch {m['torch']}; {a['dtype']}; {size} config; batch {a['batch_size']}; "
        f"median of {a['repeats']} after {a['warmup']} warm-up, median over {a['rounds']} "
        f"alternating round(s){''.join('; ' + e for e in extra)}; git {m.get('git_sha')}",
        "",
        "| model | L | fwd ms | fwd+bwd ms | tokens/s | peak MiB | floor ms | of floor | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = label(r["model"], size)
        if "train_ms" not in r:
            note = r.get("skipped") or r.get("error", "")
            lines.append(f"| {name} | {r['length']} | | | | | | | {note} |")
            continue
        fwd = f"{r['forward_ms']:.1f}" if "forward_ms" in r else ""
        floor = f"{r['floor_ms']:.1f}" if "floor_ms" in r else ""
        frac = f"{r['floor_fraction']:.2f}" if "floor_fraction" in r else ""
        notes = []
        load = r.get("load_before")
        if load is not None and not m.get("gpu") and load > a["threads"] + 0.5:
            notes.append(f"load {load:.1f}")
        if r.get("compile_s_all"):
            notes.append(f"compile {statistics.median(r['compile_s_all']):.0f} s")
        lines.append(
            f"| {name} | {r['length']} | {fwd} | {r['train_ms']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {r['peak_mib']:.1f} | {floor} | {frac} | "
            f"{', '.join(notes)} |"
        )
    ratio_rows = []
    for model in ("mega_chunk", "mega", "hf_mega_chunk", "hf_mega"):
        cells = [
            s.get(f"{model}_vs_transformer_speed"),
            s.get(f"{model}_vs_transformer_memory"),
            s.get(f"{model}_vs_transformer_math_speed"),
            s.get(f"{model}_vs_transformer_math_memory"),
            s.get(f"{model}_vs_hf_speed"),
            s.get(f"{model}_vs_hf_memory"),
        ]
        if any(c is not None for c in cells):
            text = " | ".join("" if c is None else f"{c:.2f}×" for c in cells)
            ratio_rows.append(f"| {label(model, size)} | {text} |")
    if ratio_rows:
        lines += [
            "",
            f"## Ratios at L = {RATIO_LENGTH}, forward+backward "
            "(speed = their time / ours, memory = our peak / theirs; paper Table 2 columns)",
            "",
            "| model | speed vs XFM‡ | memory vs XFM‡ | speed vs XFM‡ (math) | memory vs XFM‡ "
            "(math) | speed vs transformers | memory vs transformers |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *ratio_rows,
        ]
    scaling = s.get("mega_chunk_scaling")
    if scaling:
        lo, hi = scaling["lengths"]
        lines += [
            "",
            f"Mega-chunk time({hi}) / time({lo}) = {scaling['time_ratio']:.1f} "
            f"(length ratio {scaling['length_ratio']:.0f}).",
        ]
    met = targets(s) if m.get("gpu") else []
    if met:
        lines += ["", "## Targets (issue 10, on this card)", "", "| target | result | met |"]
        lines += ["|---|---|---|", *(f"| {t} | {r} | {ok} |" for t, r, ok in met)]
    if a.get("peak_gflops"):
        lines += [
            "",
            f"Floor: GEMM multiply-adds of the step × 2 × 3 (fwd+bwd) at {a['peak_gflops']:g} "
            "GFLOP/s; 'of floor' = floor / measured time.",
        ]
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, size: str = "text", title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in MODELS:
        done = [r for r in rows if r["model"] == model and "train_ms" in r]
        if not done:
            continue
        lengths = [r["length"] for r in done]
        style = "--" if model.startswith("hf_") else "-"
        ax_t.plot(
            lengths,
            [r["train_ms"] / 1000 for r in done],
            style,
            marker="o",
            label=label(model, size),
        )
        ax_m.plot(
            lengths,
            [max(r["peak_mib"], 1e-3) for r in done],
            style,
            marker="o",
            label=label(model, size),
        )
    for ax, title in ((ax_t, "forward+backward time (s)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    if ax_t.lines:
        ax_t.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
