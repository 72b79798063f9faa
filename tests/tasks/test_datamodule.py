"""LRADataModule: loaders, seeded shuffling, eval never drops the last batch."""

from __future__ import annotations

import torch

from tasks.datamodule import LRADataModule
from tasks.listops import ListOpsTask
from tasks.pathfinder import PathfinderTask
from tasks.retrieval import RetrievalTask
from tests.tasks.conftest import paths_for, write_aan, write_listops, write_pathfinder


def _listops_dm(data_dir, **kw):
    write_listops(data_dir / "listops", per_split={"train": 10, "val": 5, "test": 7})
    return LRADataModule(ListOpsTask(num_proc=1), paths_for(data_dir), progress=False, **kw)


def test_batches_have_the_contract_keys_and_shapes(data_dir):
    dm = _listops_dm(data_dir, batch_size=4, pad_to_multiple_of=8)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "lengths", "labels"}
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] % 8 == 0
    assert batch["input_ids"].shape[1] - int(batch["lengths"].max()) < 8
    assert (batch["attention_mask"].sum(1) == batch["lengths"]).all()
    ends = batch["input_ids"].gather(1, (batch["lengths"] - 1)[:, None]).squeeze(1)
    assert (ends == 1).all()  # every sequence ends with eos


def test_eval_loaders_keep_the_last_partial_batch_and_order(data_dir):
    dm = _listops_dm(data_dir, batch_size=4, eval_batch_size=2)
    sizes = [len(b["labels"]) for b in dm.test_dataloader()]
    assert sizes == [2, 2, 2, 1]
    labels = torch.cat([b["labels"] for b in dm.val_dataloader()]).tolist()
    assert labels == dm.built.dataset["val"]["labels"]


def test_train_shuffle_is_seeded(data_dir):
    order = []
    for seed in (0, 0, 1):
        dm = _listops_dm(data_dir, batch_size=10, seed=seed)
        order.append(next(iter(dm.train_dataloader()))["input_ids"].tolist())
    assert order[0] == order[1] and order[0] != order[2]


def test_workers_give_the_same_batches(data_dir):
    base = _listops_dm(data_dir, batch_size=3)
    multi = _listops_dm(data_dir, batch_size=3, num_workers=2)
    for a, b in zip(base.val_dataloader(), multi.val_dataloader(), strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])


def test_pixel_and_retrieval_batches(data_dir):
    write_pathfinder(data_dir / "pathfinder" / "pathfinder32" / "curv_contour_length_14", n=20)
    dm = LRADataModule(
        PathfinderTask(num_proc=1), paths_for(data_dir), batch_size=5, progress=False
    )
    b = next(iter(dm.val_dataloader()))
    assert b["inputs"].shape == (2, 1024) and b["inputs"].dtype == torch.float32
    assert b["inputs"].min() >= -1 and b["inputs"].max() <= 1
    write_aan(data_dir / "aan")
    dm = LRADataModule(
        RetrievalTask(num_proc=1),
        paths_for(data_dir),
        batch_size=4,
        pad_to_multiple_of=16,
        progress=False,
    )
    b = next(iter(dm.train_dataloader()))
    assert b["input_ids"].shape[:2] == (4, 2) and b["input_ids"].shape[2] % 16 == 0
    assert b["lengths"].shape == (4, 2)
