"""The training-step benchmark: what it derives from its measurements (not how fast it is)."""

import json

import pytest
import torch

from mega_lra.bench import train_step as bt
from mega_lra.models import catalog


def test_a_case_times_the_module_step_and_the_backbone_on_a_full_length_batch():
    row = bt.run_case(
        dict(
            experiment="demo/listops",
            batch=2,
            steps=2,
            warmup=1,
            device="cpu",
            dtype="float32",
            threads=1,
            overrides=["model.num_hidden_layers=1"],
        )
    )
    assert row["length"] == 128 and row["params"] > 0
    assert len(row["step_ms_all"]) == 3 and row["step_ms"] > 0 and row["backbone_ms"] > 0
    assert row["overhead_ratio"] == pytest.approx(row["step_ms"] / row["backbone_ms"])
    assert row["total_steps"] == 1500 and row["effective_batch"] == 32
    assert row["step_gflop"] > 0


def test_synthetic_batches_are_full_length_and_chunk_padded():
    class Task:
        head, input_kind, num_classes, vocab_size, max_length = "retrieval", "tokens", 2, 9, 100

    class Model:
        pad_multiple = 32

    batch = bt.synthetic_batch(Task(), Model(), batch=3)
    assert batch["input_ids"].shape == (3, 2, 128)
    assert batch["attention_mask"].all() and torch.all(batch["lengths"] == 128)
    assert batch["input_ids"].min() >= 3 and batch["input_ids"].max() < 9


def test_flops_of_a_known_model():
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 8, bias=False)

        def forward(self, batch):
            return self.proj(batch["inputs"])

    batch = {"inputs": torch.randn(5, 16), "labels": torch.zeros(5, dtype=torch.long)}
    # forward 2*B*in*out; backward: the weight's gradient only (the input needs none)
    assert bt.step_flops(Linear(), batch) == 2 * 5 * 16 * 8 * 2


def test_hours_and_projection_formulas():
    row = dict(step_ms=500.0, batch=2, total_steps=1000, effective_batch=64, step_gflop=4.0)
    assert bt.hours(row) == pytest.approx(1000 * 64 * 0.25 / 3600)
    assert bt.projected_gpu_hours(row, tflops=10) == pytest.approx(1000 * 64 * 2e9 / 10e12 / 3600)


def test_cli_writes_json_and_markdown_and_never_overwrites(tmp_path):
    out = tmp_path / "b"
    assert bt.main(["--experiments", "demo/listops", "--steps", "1", "--warmup", "0",
                    "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "bench_training.json").read_text())
    assert report["rows"][0]["experiment"] == "demo/listops"
    assert "GPU hours (projected)" in (out / "bench_training.md").read_text()
    with pytest.raises(SystemExit):
        bt.main(["--experiments", "demo/listops", "--out", str(out)])


def test_default_experiments_are_every_recipe_in_the_papers_task_order():
    recipes = bt.recipes()
    assert set(recipes) == set(
        catalog.experiment_names("lra/") + catalog.experiment_names("speech/")
    )
    tasks = [name.split("/")[2] for name in recipes if name.startswith("lra/")]
    order = catalog.lra_tasks()
    assert tasks == sorted(tasks, key=order.index)
    assert bt.demos() == catalog.experiment_names("demo/") and bt.demos()


def test_thin_cli_is_the_train_step_benchmark():
    from mega_lra import bench_training

    assert bench_training.main is bt.main
