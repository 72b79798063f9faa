"""Time transformers-4.41.2 ``MegaModel`` on CPU (runs inside the reference env).

Usage::

    bench_model.py --config CONFIG --seq-len L [--batch-size B] [--chunk-size C]
                   [--threads T] [--repeats N] [--warmup W] [--mode both|forward|train]
                   [--dtype float32|float64] [--seed S]

CONFIG is a JSON file (e.g. a ``config.json``) or an inline JSON object of ``MegaConfig``
fields. ``--chunk-size C`` with C > 0 sets ``use_chunking=true, chunk_size=C``; ``C <= 0`` sets
``use_chunking=false`` (and ``chunk_size=-1``); omitted keeps the config's values. With chunking,
L must be a multiple of C (HF does not pad).

Builds ``MegaModel(config, add_pooling_layer=False)`` on random token ids (B, L) and measures,
with ``torch.set_num_threads(T)``, after W warm-up calls, the median over N calls of:

- ``forward``: ``model.eval()`` under ``torch.no_grad()`` (note: HF's eval mode caches the EMA
  kernel between calls, so repeated forwards skip recomputing it; that is HF's real behaviour);
- ``train``: ``model.train()``, forward + ``backward()`` of ``last_hidden_state.square().mean()``
  (dropout as configured; gradients cleared before each call).

Peak memory: the process's peak resident set size (``ru_maxrss``) minus the resident size just
before the first measured phase, in MiB. The forward phase runs first, so ``train``'s number is
the peak over both phases (run ``--mode train`` alone for an isolated figure).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import MegaConfig, MegaModel

MIB = 1024 * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def load_config(text: str) -> dict:
    inline = text.lstrip().startswith("{")
    try:
        return json.loads(text if inline else Path(text).read_text())
    except OSError as err:
        raise SystemExit(f"--config: cannot read {text}: {err}") from err
    except json.JSONDecodeError as err:
        where = "inline JSON" if inline else text
        raise SystemExit(f"--config: {where} is not valid JSON: {err}") from err


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="JSON file or inline JSON object")
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mode", choices=("both", "forward", "train"), default="both")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    if ns.repeats < 1 or ns.warmup < 0 or ns.seq_len < 1 or ns.batch_size < 1:
        parser.error("--repeats, --seq-len, --batch-size must be >= 1 and --warmup >= 0")

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(ns.threads)
    fields = load_config(ns.config)
    for key in ("architectures", "transformers_version", "torch_dtype", "model_type"):
        fields.pop(key, None)
    if ns.chunk_size is not None:
        fields["use_chunking"] = ns.chunk_size > 0
        fields["chunk_size"] = ns.chunk_size if ns.chunk_size > 0 else -1
    config = MegaConfig(**fields)
    if config.use_chunking and ns.seq_len > config.chunk_size and ns.seq_len % config.chunk_size:
        parser.error(f"--seq-len {ns.seq_len} is not a multiple of chunk_size {config.chunk_size}")

    torch.manual_seed(ns.seed)
    dtype = getattr(torch, ns.dtype)
    model = MegaModel(config, add_pooling_layer=False).to(dtype)
    ids = torch.randint(3, config.vocab_size, (ns.batch_size, ns.seq_len))
    baseline = current_rss()
    result: dict = {
        "impl": f"transformers-{transformers.__version__}",
        "torch": torch.__version__,
        "seq_len": ns.seq_len,
        "batch_size": ns.batch_size,
        "threads": torch.get_num_threads(),
        "dtype": ns.dtype,
        "use_chunking": config.use_chunking,
        "chunk_size": config.chunk_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "params": sum(p.numel() for p in model.parameters()),
        "repeats": ns.repeats,
        "warmup": ns.warmup,
    }

    if ns.mode in ("both", "forward"):
        model.eval()

        def forward():
            with torch.no_grad():
                model(ids)

        times = timed(forward, ns.warmup, ns.repeats)
        result["forward_ms_median"] = round(1000 * statistics.median(times), 3)
        result["forward_ms_all"] = [round(1000 * t, 3) for t in times]
        result["forward_peak_rss_delta_mib"] = round((peak_rss() - baseline) / MIB, 1)

    if ns.mode in ("both", "train"):
        model.train()

        def train_step():
            model.zero_grad(set_to_none=True)
            model(ids).last_hidden_state.square().mean().backward()

        times = timed(train_step, ns.warmup, ns.repeats)
        result["train_ms_median"] = round(1000 * statistics.median(times), 3)
        result["train_ms_all"] = [round(1000 * t, 3) for t in times]
        result["train_peak_rss_delta_mib"] = round((peak_rss() - baseline) / MIB, 1)

    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
