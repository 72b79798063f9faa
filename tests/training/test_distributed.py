"""Training on several processes, on CPU with the gloo backend: `trainer=ddp_cpu` through the
CLI (Lightning relaunches the script per rank), evaluation that scores every row exactly once,
one run dir and one results.json, exact resume with per-rank RNG states, SyncBatchNorm's
statistics synchronised without GPUs, and Lightning's SLURM auto-requeue switched off."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf
from torch import nn

from mega_lra.layers.norms import MaskedBatchNorm, SequenceNorm
from mega_lra.models import build_model
from mega_lra.training.config import compose
from mega_lra.training.distributed import (
    cluster_plugins,
    rng_states_for_rank,
    sync_batchnorm_for_cpu,
)
from tasks.datamodule import LRADataModule
from tests.helpers import run_module, tiny
from tests.training.helpers import run_overrides, write_listops_release
from tests.training.sync_norm_worker import sync_norm_worker

STEPS = 6  # 16 training rows / (2 processes x batch 2) = 4 steps per epoch: crosses an epoch end


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """ListOps with 7 validation and 7 test rows: two shards of 4 + 3 (padding would show)."""
    data = tmp_path_factory.mktemp("ddp-data")
    return write_listops_release(data, {"train": 16, "val": 7, "test": 7})


def ddp_args(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "task=listops",
        "model=mega_chunk",
        *tiny("mega_chunk"),
        *run_overrides(data, steps=STEPS),
        "trainer=ddp_cpu",
        "model.normalization_type=syncbatchnorm",  # Path-X's norm: needs the gloo fallback
        "model.dropout_prob=0.2",  # dropout masks come from each process's own RNG stream
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "+callbacks.draws={_target_: tests.training.launch_helpers.RankDependentDraws}",
        f"paths.runs_dir={run.parent / 'runs'}",  # a second run dir would appear here
        f"hydra.run.dir={run}",
        *extra,
    ]


def probe(out: Path) -> str:
    return f"+callbacks.probe={{_target_: tests.training.launch_helpers.EvalProbe, out: {out}}}"


@pytest.fixture(scope="module")
def ddp_run(odd_data, tmp_path_factory) -> Path:
    """One uninterrupted 2-process run (shared by the tests below)."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    done = run_module("mega_lra.train", *ddp_args(odd_data, run, probe(run.parent / "probe")))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "MaskedBatchNorm all-reduce" in done.stderr  # the SyncBatchNorm fallback was taken
    return run


def single_process_correct(run: Path, ckpt: str, split: str) -> int:
    """Rows of a 7-row split a checkpoint classifies right, recounted here without Lightning."""
    cfg = OmegaConf.load(run / "config.yaml")
    model = build_model(cfg)
    state = torch.load(run / "checkpoints" / ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    model.eval()
    dm = LRADataModule(instantiate(cfg.task), cfg.paths, batch_size=3, pad_to_multiple_of=16)
    dm.setup()
    correct = total = 0
    with torch.no_grad():
        for batch in dm.eval_dataloader(split):
            correct += int((model(batch).argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    assert total == 7
    return correct


@pytest.mark.slow
def test_ddp_run_scores_every_eval_row_once_and_matches_one_process(ddp_run):
    run = ddp_run
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == STEPS and results["test_checkpoint"] == "best.ckpt"
    # the same weights evaluated on one process give the DDP numbers (float32 of k / 7; a
    # repeated row would give k / 8)
    test_right = single_process_correct(run, "best.ckpt", "test")
    assert results["test_accuracy"] == pytest.approx(test_right / 7, abs=1e-6)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["mega_lra"]
    assert results["best_val_accuracy"] == best["best_val_accuracy"]
    val_right = single_process_correct(run, "best.ckpt", "val")
    assert best["best_val_accuracy"] == pytest.approx(val_right / 7, abs=1e-6)
    # each process scored a disjoint shard; together every row exactly once (7 = 4 + 3)
    for split in ("val", "test"):
        shards = [
            json.loads((run.parent / "probe" / f"{split}-rank{r}.json").read_text()) for r in (0, 1)
        ]
        assert [s["rank"] for s in shards] == [0, 1]
        assert [s["world"] for s in shards] == [2, 2]
        assert {s["sampler"] for s in shards} == {"UnrepeatedDistributedSampler"}
        assert sorted(shards[0]["rows"] + shards[1]["rows"]) == list(range(7))
        assert [s["scored"] for s in shards] == [4, 3]


@pytest.mark.slow
def test_ddp_run_has_one_run_dir_one_results_file_and_rank_zero_files(ddp_run):
    run = ddp_run
    assert sorted(p.name for p in run.parent.iterdir()) == ["probe", "run"]  # no runs/ dir
    assert len(list(run.rglob("results.json"))) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run / ".hydra" / "config.yaml").is_file()  # rank 0's; rank 1 writes no .hydra
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1's log, in the same dir
    # the CSV logger wrote from rank 0 only: one file, no spurious "pre-resume" copies
    assert sorted(p.name for p in (run / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    steps = [r.split(",") for r in (run / "csv" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(steps) == len({tuple(r) for r in steps})  # no row written twice


@pytest.mark.slow
def test_ddp_run_resumes_to_the_uninterrupted_result(odd_data, ddp_run, tmp_path):
    run = tmp_path / "run"
    flag = tmp_path / "interrupted"
    stop = f"+callbacks.stop={{_target_: tests.training.launch_helpers.InterruptOnce, step: 5, flag: {flag}}}"  # noqa: E501
    died = run_module("mega_lra.train", *ddp_args(odd_data, run, stop))
    assert died.returncode == 3 and flag.read_text() == "5"
    assert not (run / "results.json").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5  # the first step of epoch 2 (step 4, its end, is not saved)
    by_rank = last["mega_lra"]["rng_states_by_rank"]  # both processes' states, saved by rank 0
    assert len(by_rank) == 2 and not torch.equal(by_rank[0]["torch"], by_rank[1]["torch"])

    resumed = run_module("mega_lra.train", *ddp_args(odd_data, run, stop, "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stdout
    a = json.loads((ddp_run / "results.json").read_text())
    b = json.loads((run / "results.json").read_text())
    for key in ("best_val_accuracy", "test_accuracy", "steps", "group"):
        assert a[key] == b[key], key
    wa = torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bitwise, dropout on both ranks


def test_each_process_restores_its_own_rng_states_and_a_new_world_size_warns():
    saved = {"rng_states": "rank0", "rng_states_by_rank": ["rank0", "rank1"]}
    assert rng_states_for_rank(saved, 1, 2) == "rank1"
    assert rng_states_for_rank({"rng_states": "only"}, 0, 1) == "only"
    with pytest.warns(UserWarning, match="from a checkpoint written by 2"):
        assert rng_states_for_rank(saved, 2, 4) == "rank0"
    with pytest.warns(UserWarning, match="written by 1"):
        assert rng_states_for_rank({"rng_states": "only"}, 1, 2) == "only"


def test_eval_loaders_shard_odd_splits_without_repeats(odd_data):
    class Trainer:  # what LRADataModule reads of its trainer
        def __init__(self, rank: int) -> None:
            self.world_size, self.global_rank = 2, rank

    task = instantiate(compose(["task=listops"]).task)
    shards = []
    for rank in (0, 1):
        dm = LRADataModule(task, {"data_dir": odd_data, "cache_dir": odd_data / ".c"}, 2)
        dm.trainer = Trainer(rank)
        labels = [int(x) for b in dm.val_dataloader() for x in b["labels"]]
        shards.append((list(dm.val_dataloader().sampler), labels))
    assert sorted(shards[0][0] + shards[1][0]) == list(range(7))
    one = LRADataModule(task, {"data_dir": odd_data, "cache_dir": odd_data / ".c"}, 2)
    whole = [int(x) for b in one.val_dataloader() for x in b["labels"]]
    by_row = dict(zip(shards[0][0] + shards[1][0], shards[0][1] + shards[1][1]))
    assert [by_row[i] for i in range(7)] == whole  # the shards' rows are the split's rows


# ------------------------------------------------------------------- SyncBatchNorm on gloo
@pytest.mark.slow
def test_syncbatchnorm_on_gloo_equals_batchnorm_over_the_whole_batch(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(4, 5, 3)  # (B, L, D): two processes get 2 sequences each
    mp.spawn(
        sync_norm_worker,
        args=(2, f"file://{tmp_path / 'pg'}", x, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # reference: one process, one BatchNorm over all 4 sequences (what SyncBatchNorm computes)
    ref = nn.BatchNorm1d(3)
    xr = x.clone().requires_grad_(True)
    weights = torch.cat(
        [torch.arange(6 * 5, dtype=torch.float32).reshape(2, 5, 3) + r for r in (0, 1)]
    )
    (ref(xr.transpose(1, 2)).transpose(1, 2) * weights).sum().backward()
    ref_stats = (ref.running_mean.clone(), ref.running_var.clone())
    ref.train()
    y_ref = ref(x.transpose(1, 2)).transpose(1, 2)  # second step, as the workers' second call
    for r in (0, 1):
        torch.testing.assert_close(got[r]["grad"], xr.grad.chunk(2)[r])
        torch.testing.assert_close(got[r]["y"], y_ref.detach().chunk(2)[r])
    torch.testing.assert_close(got[0]["weight_grad"] + got[1]["weight_grad"], ref.weight.grad)
    torch.testing.assert_close(got[0]["running_mean"], ref.running_mean)
    torch.testing.assert_close(got[1]["running_var"], ref.running_var)
    assert not torch.equal(ref_stats[0], ref.running_mean)  # two updates were compared


def test_syncbatchnorm_swap_keeps_state_and_outputs_on_one_process():
    torch.manual_seed(0)
    norm = SequenceNorm("syncbatchnorm", 4)
    with torch.no_grad():
        norm.norm.weight.uniform_()
        norm.norm.running_mean.uniform_()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    x = torch.randn(3, 6, 4)
    y_train = norm(x)  # one process: torch's SyncBatchNorm is a BatchNorm
    norm.load_state_dict(before)
    norm.eval()
    y_eval = norm(x)
    norm.load_state_dict(before)
    norm.train()
    assert sync_batchnorm_for_cpu(norm) == 1 and isinstance(norm.norm, MaskedBatchNorm)
    assert norm.state_dict().keys() == before.keys()
    assert all(torch.equal(norm.state_dict()[k], v) for k, v in before.items())
    torch.testing.assert_close(norm(x), y_train)
    norm.load_state_dict(before)
    norm.eval()
    torch.testing.assert_close(norm(x), y_eval)
    assert sync_batchnorm_for_cpu(norm) == 0  # nothing left to swap


# ------------------------------------------------------------------------------- SLURM
SLURM_ENV = {  # what srun sets in a job task (a submitit job looks like this)
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_JOB_NAME": "train",
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "node1",
}


def test_under_slurm_lightning_leaves_requeueing_to_submitit(monkeypatch):
    import lightning as L

    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    plugins = cluster_plugins()
    assert len(plugins) == 1 and isinstance(plugins[0], SLURMEnvironment)
    assert plugins[0].auto_requeue is False

    def usr1_after_setup(plugins: list) -> object:
        trainer = L.Trainer(accelerator="cpu", devices=1, plugins=plugins, logger=False)
        before = signal.getsignal(signal.SIGUSR1)
        trainer._signal_connector.register_signal_handlers()
        try:
            return signal.getsignal(signal.SIGUSR1)
        finally:
            trainer._signal_connector.teardown()
            signal.signal(signal.SIGUSR1, before)

    assert usr1_after_setup(list(plugins)) in (signal.SIG_DFL, None)  # ours: no handler
    assert callable(usr1_after_setup([]))  # Lightning's default under SLURM would requeue
    for key in SLURM_ENV:
        monkeypatch.delenv(key)
    assert list(cluster_plugins()) == []
