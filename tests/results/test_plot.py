"""`python -m mega_lra.plot`: the series plotted equal the input (checked on the data before
drawing and on the drawn lines), the PNG is valid, nothing is overwritten without --force."""

from __future__ import annotations

import statistics
import struct
from pathlib import Path

import pytest

from mega_lra import plot
from mega_lra.results import figures
from tests.results.helpers import PAPER, seeds_of, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_sane_png(path: Path) -> None:
    width, height = png_size(path)
    assert 300 <= width <= 4000 and 200 <= height <= 3000, (width, height)
    assert path.stat().st_size > 5000  # something was drawn


# Lightning's CSVLogger: one row per log call, each filling only some columns.
METRICS = {
    "train/loss": [(9, 2.3), (19, 1.7), (29, 1.2), (39, 0.9)],
    "train/acc": [(9, 0.1), (19, 0.3), (29, 0.55), (39, 0.7)],
    "val/loss": [(19, 1.8), (39, 1.0)],
    "val/acc": [(19, 0.25), (39, 0.65)],
}


def write_metrics(run_dir: Path, metrics: dict[str, list[tuple[int, float]]]) -> Path:
    columns = ["epoch", "step", *metrics, "train/lr"]
    lines = [",".join(columns)]
    for split in ("train", "val"):
        names = [n for n in metrics if n.startswith(split)]
        steps = sorted({s for n in names for s, _ in metrics[n]})
        for step in steps:
            row = {"epoch": "0", "step": str(step)}
            for n in names:
                row.update((n, repr(v)) for s, v in metrics[n] if s == step)
            lines.append(",".join(row.get(c, "") for c in columns))
    path = run_dir / "csv" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def as_xy(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [s for s, _ in points], [v for _, v in points]


def test_curves_plot_exactly_the_logged_values(tmp_path):
    run = write_run(tmp_path, "run", task="text", seed=3)
    write_metrics(run, METRICS)
    curves, warnings = figures.load_curves([run])
    assert warnings == [] and len(curves) == 1
    assert curves[0].series == {name: as_xy(pts) for name, pts in METRICS.items()}
    assert curves[0].label == "run (mega, text, seed 3)"

    fig = figures.draw_curves(curves)
    loss_ax, acc_ax = fig.axes
    for name, points in METRICS.items():
        split, metric = name.split("/")
        ax = loss_ax if metric == "loss" else acc_ax
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == f"{curves[0].label}: {split}"]
        assert list(line.get_xdata()) == as_xy(points)[0]
        assert list(line.get_ydata()) == as_xy(points)[1]
        assert line.get_linestyle() == ("-" if split == "train" else "--")


def test_curves_missing_columns_are_named_and_the_rest_plotted(tmp_path):
    run = tmp_path / "run"
    write_metrics(run, {k: v for k, v in METRICS.items() if k != "val/acc"})
    curves, warnings = figures.load_curves([run])
    assert curves[0].missing == ["val/acc"]
    assert warnings == [f"{run / 'csv' / 'metrics.csv'}: no values for val/acc"]
    assert set(curves[0].series) == {"train/loss", "train/acc", "val/loss"}

    empty = tmp_path / "nocsv"
    empty.mkdir()
    with pytest.raises(figures.PlotError, match="nocsv: no csv/metrics.csv"):
        figures.load_curves([empty])
    bad = tmp_path / "bad"
    (bad / "csv").mkdir(parents=True)
    (bad / "csv" / "metrics.csv").write_text("epoch,step,other\n0,1,2\n")
    curves, warnings = figures.load_curves([bad])
    assert curves == [] and "none of the columns" in warnings[0] and "bad" in warnings[0]


def test_curves_cli_writes_a_png_in_the_sweep_dir_and_never_overwrites(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for job in range(2):
        write_metrics(write_run(sweep, str(job), seed=job), METRICS)
    assert plot.main(["curves", str(sweep)]) == 0  # a sweep dir: every run below it
    first = sweep / "curves.png"
    assert f"wrote {first}" in capsys.readouterr().out
    assert_sane_png(first)
    before = first.read_bytes()

    assert plot.main(["curves", str(sweep / "0"), str(sweep / "1")]) == 0
    assert f"wrote {sweep / 'curves-2.png'}" in capsys.readouterr().out  # a new name
    assert first.read_bytes() == before

    out = tmp_path / "mine.png"
    out.write_bytes(b"keep")
    assert plot.main(["curves", str(sweep), "--out", str(out)]) == 1
    assert "exists: pass --force" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert plot.main(["curves", str(sweep), "--out", str(out), "--force"]) == 0
    assert_sane_png(out)


def test_ablation_panels_hold_our_means_and_the_papers_points(tmp_path, capsys):
    chunk = {
        c: seeds_of(
            tmp_path,
            f"c{c}",
            [0.7 + c / 1000, 0.74, 0.71],
            task="text",
            model="mega_chunk",
            chunk_size=c,
            group=f"c{c}",
        )
        for c in (16, 64)
    }
    chunk[-1] = seeds_of(tmp_path, "full", [0.9], task="text", group="full")
    ema = {
        h: seeds_of(
            tmp_path,
            f"h{h}",
            [0.5 + h / 100, 0.52],
            task="text",
            ema_projection_size=h,
            group=f"h{h}",
        )
        for h in (0, 1)
    }
    seeds_of(
        tmp_path,
        "gen",
        [0.99],
        task="text",
        model="mega_chunk",
        chunk_size=32,
        data_source="generate",
        group="gen",
    )

    panels, notes = figures.ablation_panels([tmp_path], PAPER)
    by_axis = {p.axis: p for p in panels}
    (line,) = by_axis["chunk_size"].lines
    assert line.x == [16, 64, -1]  # full attention last; the generated c=32 run left out
    assert line.y == pytest.approx([statistics.mean(chunk[c]) for c in line.x])
    assert line.err[:2] == pytest.approx([statistics.stdev(chunk[c]) for c in (16, 64)])
    assert line.err[2] is None and line.n == [3, 3, 1]  # one seed: no error bar
    assert any("1 run(s) on generated data left out" in n for n in notes)
    text_ref = [p for p in PAPER.chunk_points if p.task == "text"]
    paper_text = next(p for p in by_axis["chunk_size"].paper if p.task == "text")
    assert paper_text.x == [p.x for p in text_ref] and paper_text.y == [
        p.ref.value for p in text_ref
    ]
    (line,) = by_axis["ema_projection_size"].lines
    assert line.x == [0, 1, 16]
    assert line.y == pytest.approx([statistics.mean(ema[0]), statistics.mean(ema[1]), chunk[-1][0]])
    assert by_axis["ema_projection_size"].xs == sorted(set(PAPER.ema_values))

    fig = figures.draw_ablation(panels)
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if c.get_label() == by_axis["chunk_size"].lines[0].label]
    ours = bars.lines[0]  # the errorbar's data line
    xs = by_axis["chunk_size"].xs
    assert list(ours.get_xdata()) == [xs.index(x) for x in (16, 64, -1)]
    assert list(ours.get_ydata()) == pytest.approx(by_axis["chunk_size"].lines[0].y)
    segments = bars.lines[2][0].get_segments()  # one vertical bar per point: mean -+ std
    for seg, c in zip(segments[:2], (16, 64)):
        half = (seg[1][1] - seg[0][1]) / 2
        assert half == pytest.approx(statistics.stdev(chunk[c]))
    (star,) = [ln for ln in ax.get_lines() if ln.get_label() == paper_text.label]
    assert list(star.get_xdata()) == [xs.index(x) for x in paper_text.x]
    assert list(star.get_ydata()) == paper_text.y
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [("full" if x == -1 else str(x)) for x in xs]

    assert plot.main(["ablation", str(tmp_path)]) == 0
    assert_sane_png(tmp_path / "ablation.png")
    assert f"wrote {tmp_path / 'ablation.png'}" in capsys.readouterr().out


def test_ablation_without_ablation_runs_is_a_clear_error(tmp_path, capsys):
    seeds_of(tmp_path, "lo", [0.6], task="listops")  # the paper's default setting only
    assert plot.main(["ablation", str(tmp_path)]) == 1
    assert "no ablation runs" in capsys.readouterr().err
    assert not (tmp_path / "ablation.png").exists()
