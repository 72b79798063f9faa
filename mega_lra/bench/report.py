"""The speed benchmark's report: ratios at 4K (the paper's Table 2 columns), each model's growth
with length, the GPU targets, the Markdown table and the time/memory plot.

Rows are the dicts `mega_lra.bench.speed` writes into `bench.json`: `model` (the row's name:
`mega_chunk`, `hf_mega`, `transformer_math`, ...), `label`, `length`, `train_ms`, `peak_mib`,
... A row without `train_ms` was skipped or failed (`skipped` / `error` says why).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from mega_lra.atomic_files import atomic_write
from mega_lra.results.measured import BASELINE  # XFM‡, the model Table 2's ratios are taken against
from mega_lra.results.paper import load_paper

RATIO_LENGTH = 4096  # the paper's Table 2 compares speed and memory at 4K
HF_PREFIX, MATH_SUFFIX = "hf_", "_math"
# the GPU targets (forward+backward at 4K, LRA Text recipe, bf16, on the card)
TARGET_VS_HF_SPEED, TARGET_VS_HF_MEMORY = 3.0, 0.5
TARGET_CHUNK_VS_XFM_SPEED = 5.5
TARGET_PATHX_GIB = 16.0


def cell(rows: list[dict[str, Any]], model: str, length: int) -> dict[str, Any] | None:
    """The measured row of (model, length), or None."""
    for r in rows:
        if r["model"] == model and r["length"] == length and "train_ms" in r:
            return r
    return None


def row_label(rows: list[dict[str, Any]], model: str) -> str:
    """How the table names row `model` (its rows' `label`; older reports: the name)."""
    return next((r["label"] for r in rows if r["model"] == model and r.get("label")), model)


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def _baselines() -> tuple[str, str]:
    return BASELINE, BASELINE + MATH_SUFFIX


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios at 4K (paper Table 2: speed = t_XFM / t, memory = mem / mem_XFM; against XFM‡
    through SDPA and through math attention), each model against transformers' Mega at its
    sizes (`hf_<model>`), each model's time(longest) / time(shortest), and the Path-X peak."""
    s: dict[str, Any] = {}
    names = _names(rows)
    for base in _baselines():
        xfm = cell(rows, base, RATIO_LENGTH)
        for model in names:
            r = cell(rows, model, RATIO_LENGTH)
            if r and xfm and model not in _baselines():
                s[f"{model}_vs_{base}_speed"] = xfm["train_ms"] / r["train_ms"]
                s[f"{model}_vs_{base}_memory"] = r["peak_mib"] / max(xfm["peak_mib"], 1e-9)
    for model in names:
        a, b = cell(rows, model, RATIO_LENGTH), cell(rows, HF_PREFIX + model, RATIO_LENGTH)
        if a and b:
            s[f"{model}_vs_hf_speed"] = b["train_ms"] / a["train_ms"]
            s[f"{model}_vs_hf_memory"] = a["peak_mib"] / max(b["peak_mib"], 1e-9)
    for model in names:
        lengths = sorted({r["length"] for r in rows if r["model"] == model and "train_ms" in r})
        if len(lengths) > 1:
            first, last = cell(rows, model, lengths[0]), cell(rows, model, lengths[-1])
            s[f"{model}_scaling"] = {
                "lengths": [lengths[0], lengths[-1]],
                "time_ratio": last["train_ms"] / first["train_ms"],
                "length_ratio": lengths[-1] / lengths[0],
            }
    pathx = next(
        (
            r
            for r in rows
            if r["model"] == "mega"
            and r.get("size") == "pathx"
            and "train_ms" in r
            and r["length"] == r.get("task_length")
        ),
        None,
    )
    if pathx:
        s["pathx_peak_gib"] = pathx["peak_mib"] / 1024
        s["pathx_batch"] = pathx["batch"]
        s["pathx_length"] = pathx["length"]
    return s


def targets(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, result, met) of the GPU targets for the numbers this run has."""
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
    flash = s.get(f"mega_chunk_vs_{BASELINE}_speed")
    check(
        "Mega-chunk ≥ 5.5× XFM‡ with math attention (paper's way)",
        f"mega_chunk_vs_{BASELINE}{MATH_SUFFIX}_speed",
        TARGET_CHUNK_VS_XFM_SPEED,
        True,
        extra="" if flash is None else f" (vs XFM‡ with SDPA/flash: {flash:.2f}×)",
    )
    if "pathx_peak_gib" in s:
        length = s.get("pathx_length", "the task's length")
        check(
            f"Path-X (Mega, laplace, L = {length}, batch {s['pathx_batch']}) fwd+bwd "
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
        name = r.get("label") or r["model"]
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
    xfm, math = _baselines()
    paper = load_paper()
    for model in _names(rows):
        cells = [
            s.get(f"{model}_vs_{xfm}_speed"),
            s.get(f"{model}_vs_{xfm}_memory"),
            s.get(f"{model}_vs_{math}_speed"),
            s.get(f"{model}_vs_{math}_memory"),
            s.get(f"{model}_vs_hf_speed"),
            s.get(f"{model}_vs_hf_memory"),
        ]
        if any(c is not None for c in cells):
            text = " | ".join("" if c is None else f"{c:.2f}×" for c in cells)
            # Table 2's Speed / Mem for this model (S4-v2‡'s for s4_v2), where the paper gives them
            ref = paper.speed_memory(model) or (None, None)
            ref_text = " | ".join(
                "" if v is None or v.value is None else f"{v.value:g}×" for v in ref
            )
            ratio_rows.append(f"| {row_label(rows, model)} | {text} | {ref_text} |")
    if ratio_rows:
        lines += [
            "",
            f"## Ratios at L = {RATIO_LENGTH}, forward+backward "
            "(speed = their time / ours, memory = our peak / theirs; paper Table 2 columns)",
            "",
            "| model | speed vs XFM‡ | memory vs XFM‡ | speed vs XFM‡ (math) | memory vs XFM‡ "
            "(math) | speed vs transformers | memory vs transformers | Table 2 speed "
            "| Table 2 memory |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *ratio_rows,
        ]
    scaling = [(model, s[f"{model}_scaling"]) for model in _names(rows) if f"{model}_scaling" in s]
    if scaling:
        lines.append("")
        for model, sc in scaling:
            lo, hi = sc["lengths"]
            lines.append(
                f"{row_label(rows, model)}: time({hi}) / time({lo}) = {sc['time_ratio']:.1f} "
                f"(length ratio {sc['length_ratio']:.0f})."
            )
    met = targets(s) if m.get("gpu") else []
    if met:
        lines += ["", "## GPU targets (on this card)", "", "| target | result | met |"]
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


def plot(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Forward+backward time and peak memory against length (log-log), one line per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = plt.get_cmap("tab20").colors  # 20 colours x 4 markers: every row its own look
    markers = "osD^"
    for i, model in enumerate(_names(rows)):
        done = [r for r in rows if r["model"] == model and "train_ms" in r]
        if not done:
            continue
        lengths = [r["length"] for r in done]
        look = dict(
            linestyle="--" if model.startswith(HF_PREFIX) else "-",
            color=colours[i % len(colours)],
            marker=markers[(i // len(colours)) % len(markers)],
            label=row_label(rows, model),
        )
        ax_t.plot(lengths, [r["train_ms"] / 1000 for r in done], **look)
        ax_m.plot(lengths, [max(r["peak_mib"], 1e-3) for r in done], **look)
    for ax, what in ((ax_t, "forward+backward time (s)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_title(what)
        ax.grid(True, which="both", alpha=0.3)
    if ax_t.lines:
        ax_m.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
