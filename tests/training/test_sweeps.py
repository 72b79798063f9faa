"""Sweeps and launchers as users run them: Hydra multiruns into a sweep dir the table reads, the
Optuna search (sqlite study continued by a second launch), the Figure 4 ablation grids, the
SLURM launcher's submission rendered without a cluster, a submitit job preempted (SIGUSR2) and
requeued resuming itself, and `python -m mega_lra.reproduce`: the Table 2 grid, dry run and a
tiny grid that is interrupted, continued and then left alone."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shlex
import stat
import statistics
from pathlib import Path

import optuna
import pytest
import submitit
import torch
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mega_lra import reproduce
from mega_lra.models import build_model, catalog
from mega_lra.models.catalog import lra_tasks
from mega_lra.training.config import CONF_DIR, compose
from tests.helpers import run_module
from tests.helpers import tiny as tiny_model

TINY = [  # a demo run of a few seconds: tiny Mega-chunk on a few generated ListOps rows
    "experiment=demo/listops",
    *tiny_model("mega_chunk"),
    "task.gen_rows.train=24",
    "task.gen_rows.val=9",
    "task.gen_rows.test=9",
    "task.gen_max_length=40",
    "trainer.max_epochs=null",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "loader.batch_size=4",
    "loader.num_workers=0",
    "sched.warmup_steps=1",
    "logger=csv",
    "progress=false",
]


def tiny(data: Path, steps: int = 3) -> list[str]:
    return [*TINY, f"paths.data_dir={data}", f"trainer.max_steps={steps}"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-data")  # generated once, cached, by the first run


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def sweep_jobs(params: dict) -> list[dict[str, str]]:
    """Hydra's own expansion of sweep params (what the basic sweeper launches)."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    batches = BasicSweeper.split_arguments(overrides, None)
    return [dict(o.split("=", 1) for o in job) for batch in batches for job in batch]


# --------------------------------------------------------------------------- multirun
def test_a_seed_multirun_gives_one_run_dir_per_job_and_a_table_row(demo_data, tmp_path):
    sweep = tmp_path / "sweep"
    done = run_module(
        "mega_lra.train", "-m", "seed=1,2", *tiny(demo_data), f"hydra.sweep.dir={sweep}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert runs == [sweep / "0", sweep / "1"]
    got = [results(r) for r in runs]
    assert [r["seed"] for r in got] == [1, 2] and got[0]["group"] == got[1]["group"]

    table = run_module("mega_lra.table", str(sweep), "--format", "csv")
    assert table.returncode == 0, table.stderr
    rows = [r for r in csv.DictReader(io.StringIO(table.stdout)) if r["mean"]]
    assert len(rows) == 1
    row = rows[0]
    accs = [100 * r["test_accuracy"] for r in got]
    assert (row["data"], row["column"], row["n"], row["seeds"]) == (
        "generated",
        "listops_small",
        "2",
        "1;2",
    )
    assert float(row["mean"]) == pytest.approx(statistics.mean(accs))
    assert float(row["std"]) == pytest.approx(statistics.stdev(accs))


# ------------------------------------------------------------------------------ Optuna
def test_optuna_search_runs_trials_and_a_second_launch_continues_the_study(demo_data, tmp_path):
    runs_dir = tmp_path / "runs"
    args = [
        "hparams_search=lr_wd",
        "hydra.sweeper.n_trials=1",
        *tiny(demo_data),
        f"paths.runs_dir={runs_dir}",
    ]
    first = run_module("mega_lra.train", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_module("mega_lra.train", *args)
    assert second.returncode == 0, second.stderr[-3000:]

    search = runs_dir / "hparams_search"
    study = optuna.load_study(
        study_name="demo/listops/lr_wd", storage=f"sqlite:///{search / 'optuna.db'}"
    )
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2  # the second launch added a trial to the first one's study
    runs = sorted(search.rglob("results.json"), key=lambda p: p.stat().st_mtime)
    assert len(runs) == 2 and runs[0].parent.parent != runs[1].parent.parent  # 2 sweep dirs
    for trial, path in zip(trials, runs):
        run = path.parent
        assert trial.value == json.loads(path.read_text())["best_val_accuracy"]
        saved = OmegaConf.load(run / "config.yaml")
        assert saved.optim.lr == pytest.approx(trial.params["optim.lr"])
        assert saved.optim.weight_decay == trial.params["optim.weight_decay"]
        assert 1e-4 <= saved.optim.lr <= 3e-2
    best = yaml.safe_load((runs[1].parent.parent / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(t.value for t in trials)


# ---------------------------------------------------------------------------- ablations
def ablation_jobs(name: str) -> list[dict[str, str]]:
    cfg = OmegaConf.load(CONF_DIR / "ablation" / f"{name}.yaml")
    assert cfg.hydra.mode == "MULTIRUN"
    return sweep_jobs(dict(cfg.hydra.sweeper.params))


def test_chunk_size_ablation_composes_every_job():
    jobs = ablation_jobs("chunk_size")
    chunks = [16, 32, 64, 128, 256, 512, 1024]
    assert sorted((j["experiment"], int(j["model.chunk_size"])) for j in jobs) == sorted(
        (f"lra/mega_chunk/{t}", c) for t in ("text", "image") for c in chunks
    )
    for job in jobs:
        cfg = compose(["ablation=chunk_size", *(f"{k}={v}" for k, v in job.items())])
        model = build_model(cfg)
        assert model.backbone.config.use_chunking and model.backbone.config.chunk_size == int(
            job["model.chunk_size"]
        )
        assert model.backbone.config.ema_projection_size == 16  # the recipe's, untouched
        assert cfg.run.experiment == job["experiment"]


EMA_DIMS = [0, 1, 2, 4, 8, 16, 32]


def test_ema_dimension_ablation_grid_holds_zero_to_32():
    jobs = ablation_jobs("ema_dim")
    assert sorted((j["experiment"], int(j["model.ema_projection_size"])) for j in jobs) == sorted(
        (f"lra/mega/{t}", h) for t in ("text", "image") for h in EMA_DIMS
    )


@pytest.mark.parametrize("experiment", ["lra/mega/text", "lra/mega/image"])
def test_ema_dimension_ablation_composes_every_job_with_an_ema(experiment):
    for h in [h for h in EMA_DIMS if h >= 1]:
        job = [f"experiment={experiment}", f"model.ema_projection_size={h}"]
        cfg = compose(["ablation=ema_dim", *job])
        model = build_model(cfg)
        assert (
            model.backbone.config.ema_projection_size == h
            and not model.backbone.config.use_chunking
        )
        expansions = [
            p.shape for n, p in model.named_parameters() if n.endswith("ema_expansion_matrix")
        ]
        assert len(expansions) == model.backbone.config.num_hidden_layers
        assert all(shape[1] == h for shape in expansions)  # (D, h, 1): h EMA dimensions


def test_ema_dimension_zero_builds_mega_without_ema():
    cfg = compose(["ablation=ema_dim", "experiment=lra/mega/text", "model.ema_projection_size=0"])
    model = build_model(cfg)
    assert model.backbone.config.ema_projection_size == 0
    assert sum(p.numel() for n, p in model.named_parameters() if "ema_gate" in n) == 0
    with_ema = build_model(compose(["experiment=lra/mega/text"]))
    ema = sum(p.numel() for n, p in with_ema.named_parameters() if "ema_gate" in n)
    assert ema > 0
    assert sum(p.numel() for p in with_ema.parameters()) - ema == sum(
        p.numel() for p in model.parameters()
    )


# -------------------------------------------------------------------------------- SLURM
def test_slurm_launcher_config_resolves_from_the_trainer(tmp_path):
    shown = run_module(
        "mega_lra.train",
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        f"hydra.sweep.dir={tmp_path}",
        "--cfg",
        "all",
        "--resolve",
        "-p",
        "hydra.launcher",
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    params = yaml.safe_load(shown.stdout.split("\n", 1)[1])  # after "# @package ..."
    assert params["_target_"].endswith("SlurmLauncher")
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)
    assert params["partition"] == "gpu" and params["submitit_folder"].startswith(str(tmp_path))
    assert params["max_num_timeout"] > 0 and params["signal_delay_s"] == 120
    assert params["additional_parameters"] == {"requeue": True}


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_launcher_submits_a_valid_sbatch_array(tmp_path, monkeypatch):
    """The plugin's own launch() with our config, against stand-ins for srun and sbatch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    captured = tmp_path / "submitted.sh"
    _executable(bin_dir / "srun", "#!/bin/sh\nexit 0\n")
    sbatch = f'#!/bin/sh\ncp "$1" {captured}\necho "Submitted batch job 4242"\n'
    _executable(bin_dir / "sbatch", sbatch)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda self: ["done"])

    sweep = tmp_path / "sweep"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.num_nodes=2",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=lab",
                f"hydra.sweep.dir={sweep}",
                "hydra.job.name=train",
            ],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    jobs = launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    assert jobs == ["done", "done"]

    lines = captured.read_text().splitlines()
    flags = dict(
        line.removeprefix("#SBATCH --").split("=", 1) if "=" in line else (line[10:], True)
        for line in lines
        if line.startswith("#SBATCH --")
    )
    assert flags["partition"] == "gpu" and flags["account"] == "lab"
    assert (flags["nodes"], flags["gpus-per-node"], flags["ntasks-per-node"]) == ("2", "4", "4")
    assert flags["time"] == "1440" and flags["cpus-per-task"] == "8"
    assert flags["signal"] == "USR2@120"  # submitit's preemption/timeout signal
    assert flags["requeue"] is True and flags["array"] == "0-1%2"  # both jobs at once
    assert "export SUBMITIT_EXECUTOR=slurm" in lines
    command = next(line for line in lines if line.startswith("srun "))
    assert "submitit.core._submit" in command and str(sweep / ".submitit") in command
    # each job may be requeued after a timeout max_num_timeout times
    pickled = sorted((sweep / ".submitit").rglob("*_submitted.pkl"))
    assert len(pickled) == 2
    with open(pickled[0], "rb") as fh:
        delayed = pickle.load(fh)
    assert delayed._timeout_countdown == 20 and delayed._timeout_min == 1440


def test_a_preempted_submitit_job_requeues_and_resumes_itself(demo_data, tmp_path):
    """submitit's local executor: SIGUSR2 (SLURM's warning before preemption or time limit)
    reaches the job mid-run; submitit requeues the same Hydra job, which resumes from last.ckpt."""
    sweep = tmp_path / "sweep"
    flag = tmp_path / "signalled"
    signal = f"+callbacks.preempt={{_target_: tests.training.launch_helpers.InterruptOnce, step: 5, flag: {flag}, how: SIGUSR2}}"  # noqa: E501
    done = run_module(
        "mega_lra.train",
        "-m",
        "hydra/launcher=submitit_local",  # timeout 60 min: the signal reads as a preemption
        *tiny(demo_data, steps=8),
        "callbacks.last_checkpoint.every_n_train_steps=2",
        signal,
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert flag.read_text() == "5"
    log = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log
    assert "Requeued job" in log and log.count("Starting with JobEnvironment") == 2
    assert "launched by submitit (local): resume=true" in log
    assert "resuming" in log and "(step 4)" in log  # from the last checkpoint before step 5
    run = sweep / "0"
    assert results(run)["steps"] == 8
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


# ------------------------------------------------------------------------ reproduce-lra
def test_reproduce_dry_run_lists_the_table_2_grid_and_its_command(tmp_path, capsys):
    out = tmp_path / "grid"
    assert reproduce.main(["--dry-run", "--out", str(out), "--launcher", "slurm", "x.y=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # every recipe in conf/experiment/lra/ (Mega, Mega-chunk and XFM‡ on the six tasks at least)
    recipes = catalog.experiment_names("lra/")
    assert {
        f"lra/{m}/{t}" for m in ("mega", "mega_chunk", "transformer") for t in lra_tasks()
    } <= set(recipes)
    n = 5 * len(recipes)
    assert lines[0].startswith(f"[mega-lra] {n} runs in {out}: 0 finished, 0 resumable, {n} new")
    dirs = {Path(line.split()[1]) for line in lines[1:-1]}
    expected = {out / r / f"seed_{s}" for r in recipes for s in range(1, 6)}
    assert dirs == expected
    cmd = shlex.split(lines[-1])
    assert cmd[1:5] == ["-m", "mega_lra.train", "-m", cmd[4]] and cmd[4].startswith("experiment=")
    assert {"resume=true", "hydra/launcher=slurm", "x.y=1", f"hydra.sweep.dir={out}"} <= set(cmd)
    sweep = {k: v for k, v in (a.split("=", 1) for a in cmd[4:6])}
    jobs = sweep_jobs(sweep)
    assert {(j["experiment"], int(j["seed"])) for j in jobs} == {
        (str(d.relative_to(out).parent), int(d.name.removeprefix("seed_"))) for d in expected
    }
    for name in {j["experiment"] for j in jobs}:
        assert (CONF_DIR / "experiment" / f"{name}.yaml").is_file()
    with pytest.raises(SystemExit) as bad:
        reproduce.main(["--dry-run", "--out", str(out), "--models", "megaa"])
    assert bad.value.code == 2 and "unknown model/task ['megaa']" in capsys.readouterr().err


def test_reproduce_grid_continues_where_it_stopped_and_then_leaves_it_alone(
    demo_data, tmp_path, capsys
):
    out = tmp_path / "grid"
    flag = tmp_path / "killed"
    stop = f"+callbacks.stop={{_target_: tests.training.launch_helpers.InterruptOnce, step: 4, flag: {flag}}}"  # noqa: E501
    args = [
        "--experiments",
        "demo/listops",
        "--seeds",
        "1,2",
        "--out",
        str(out),
        *tiny(demo_data, steps=6)[1:],  # the experiment comes from --experiments
        "callbacks.last_checkpoint.every_n_train_steps=2",
        stop,
    ]
    seed1, seed2 = out / "demo" / "listops" / "seed_1", out / "demo" / "listops" / "seed_2"

    first = run_module("mega_lra.reproduce", *args)  # seed 1 is killed at step 4: the launch dies
    assert first.returncode != 0 and flag.exists()
    assert (seed1 / "checkpoints" / "last.ckpt").is_file() and not (seed1 / "results.json").exists()
    assert not seed2.exists()

    second = run_module("mega_lra.reproduce", *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 resumable, 1 new" in second.stdout
    assert f"resuming {seed1}" in second.stdout
    assert [results(d)["steps"] for d in (seed1, seed2)] == [6, 6]
    assert [results(d)["seed"] for d in (seed1, seed2)] == [1, 2]
    assert len(list(seed1.glob(".hydra/*/overrides.yaml"))) == 2  # one per launch, none lost
    assert len(list(out.glob("multirun*.yaml"))) == 2  # the first launch's sweep file kept

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert reproduce.main(args) == 0  # everything finished: nothing launched
    assert "every run is finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------- launcher guards
def test_jobs_under_submitit_resume_and_local_ddp_is_refused(monkeypatch, capsys):
    from mega_lra.training.launch import check_launcher_supports, resume_if_requeueable

    cfg = compose(["trainer=ddp_cpu"], run_dir="/runs/x")
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert resume_if_requeueable(cfg) is False and cfg.resume is False
    check_launcher_supports(cfg)  # DDP without submitit: Lightning starts the processes

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert resume_if_requeueable(cfg) is True and cfg.resume is True
    assert "/runs/x/checkpoints/last.ckpt" in capsys.readouterr().out
    check_launcher_supports(cfg)  # on SLURM, srun starts one task per device

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    with pytest.raises(ValueError, match=r"trainer.devices x trainer.num_nodes = 2 under"):
        check_launcher_supports(cfg)
    check_launcher_supports(compose(["trainer=ddp_cpu", "trainer.devices=1"]))
