"""The CSV logger: rows appended, whole-file rewrites (a new column, a resume) atomic, and a
resumed run keeps the rows before its checkpoint and a copy of the file as it was."""

from __future__ import annotations

import csv
import os

from omegaconf import OmegaConf

from mega_lra.training.loggers import ResumableCSVLogger


def rows(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def log(logger: ResumableCSVLogger, step: int, **metrics: float) -> None:
    logger.log_metrics(metrics, step=step)
    logger.save()


def test_a_new_column_rewrites_the_file_with_every_row(tmp_path):
    logger = ResumableCSVLogger(tmp_path)
    logger.log_hyperparams({"seed": 1, "optim": {"lr": 0.01}})
    log(logger, 0, loss=2.0)
    log(logger, 1, loss=1.5, acc=0.5)  # a new column: the whole file is rewritten
    header, got = rows(logger.metrics_path)
    assert header == ["acc", "loss", "step"]
    assert [(r["step"], r["loss"], r["acc"]) for r in got] == [
        ("0", "2.0", ""),
        ("1", "1.5", "0.5"),
    ]
    assert sorted(os.listdir(logger.metrics_path.parent)) == ["hparams.yaml", "metrics.csv"]
    hparams = OmegaConf.to_container(OmegaConf.load(logger.metrics_path.parent / "hparams.yaml"))
    assert hparams == {"seed": 1, "optim": {"lr": 0.01}}


def test_a_resumed_run_keeps_the_rows_before_its_checkpoint(tmp_path):
    first = ResumableCSVLogger(tmp_path)
    for step in range(4):
        log(first, step, loss=float(step))
    before = first.metrics_path.read_bytes()
    resumed = ResumableCSVLogger(tmp_path, resume_step=2)
    log(resumed, 2, loss=20.0)
    header, got = rows(resumed.metrics_path)
    assert [(r["step"], r["loss"]) for r in got] == [("0", "0.0"), ("1", "1.0"), ("2", "20.0")]
    assert (tmp_path / "csv" / "metrics.pre-resume-1.csv").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "csv")) == ["metrics.csv", "metrics.pre-resume-1.csv"]
