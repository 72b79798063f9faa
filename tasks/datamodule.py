"""`LRADataModule`: a built task's splits as Lightning data loaders.

``LRADataModule(task, paths, batch_size=32, num_workers=0, pad_to_multiple_of=0, ...)``:
``prepare_data`` builds (or finds) the task's cache on one process; ``setup`` loads it
(memory-mapped Arrow) on every process. Loaders hand whole batches to `tasks.collate.Collator`
through `ArrowSplit.__getitems__` (one Arrow gather per batch, no per-row Python objects).
Train shuffles with a seeded generator; val/test keep order and never drop the last batch.

The train loader is torchdata's `StatefulDataLoader` over a `StatefulDistributedSampler`: the
order of epoch e is a permutation seeded by `seed + e` alone (Lightning calls `set_epoch`), split
across processes under DDP, and the loader's `state_dict()` (which Lightning stores in every
checkpoint) holds the position in it, so a run resumed mid-epoch sees exactly the batches it
would have seen, whatever else drew random numbers in between.

With `row_index=True` (self-pretraining) every batch also carries `row_index` (B,): each row's
index in its split, from which the pretraining masks are drawn. `task.train_fraction` < 1 keeps a
nested subset of the training split (`train_subset`): a prefix of one fixed permutation, so the
10% subset lies inside the 50% one; val and test are never subset.

Under DDP the val/test loaders shard with Lightning's `UnrepeatedDistributedSampler` (rank r
takes rows r, r + world, ...): every evaluation row is scored exactly once. Lightning's default
`DistributedSampler` would pad the shards with repeated rows, so accuracies would count some
rows twice. The torchmetrics objects of the module then sum the shards' counts across processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from tasks.base import Built, Paths, Task
from tasks.collate import Collator

SUBSET_SEED = 42  # the one permutation every train_fraction takes a prefix of


def train_subset(rows: int, fraction: float) -> np.ndarray:
    """Sorted indices of the `fraction` subset of `rows` training rows: the first
    max(1, round(fraction * rows)) of one fixed permutation (nested across fractions)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"task.train_fraction={fraction}: expected a number in (0, 1]")
    keep = max(1, round(fraction * rows))
    return np.sort(np.random.RandomState(SUBSET_SEED).permutation(rows)[:keep])


class ArrowSplit(torch.utils.data.Dataset):
    """A `datasets.Dataset` split served as Arrow tables (``__getitems__``: one batch)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds.with_format("arrow")

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> pa.Table:
        return self.ds[[index]]

    def __getitems__(self, indices: Sequence[int]) -> pa.Table:
        return self.ds[list(indices)]


class IndexedArrowSplit(ArrowSplit):
    """An `ArrowSplit` whose tables also hold each row's index (`row_index`)."""

    def __getitem__(self, index: int) -> pa.Table:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> pa.Table:
        table = self.ds[list(indices)]
        return table.append_column("row_index", pa.array(list(indices), type=pa.int64()))


class _CollateAny:
    """Picklable wrapper: concatenates per-item tables, then calls the collator."""

    def __init__(self, collator: Collator) -> None:
        self.collator = collator

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        if isinstance(batch, list) and batch and isinstance(batch[0], pa.Table):
            batch = pa.concat_tables(batch)
        out = self.collator(batch)
        if isinstance(batch, pa.Table) and "row_index" in batch.column_names:
            out["row_index"] = torch.from_numpy(batch.column("row_index").to_numpy().copy())
        return out


def eval_sampler(dataset: ArrowSplit, replicas: int, rank: int) -> Sampler | None:
    """In file order; under DDP rank r's shard is rows r, r + replicas, ... (no row repeated).

    None on one process (the loader then reads the split in order)."""
    if replicas <= 1:
        return None
    if len(dataset) < replicas:
        raise ValueError(
            f"an evaluation split of {len(dataset)} rows cannot be sharded over {replicas} "
            "processes (each needs at least one row): lower trainer.devices x trainer.num_nodes"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=False)


class LRADataModule(L.LightningDataModule):
    """Data for one task: train/val/test loaders with chunk-aware padding."""

    def __init__(
        self,
        task: Task,
        paths: Paths | Mapping[str, Any],
        batch_size: int = 32,
        num_workers: int = 0,
        pad_to_multiple_of: int = 0,
        *,
        eval_batch_size: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        progress: bool = True,
        row_index: bool = False,
    ) -> None:
        super().__init__()
        self.task = task
        self.paths = Paths.coerce(paths)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pad_to_multiple_of = int(pad_to_multiple_of or 0)
        self.pin_memory = pin_memory
        self.seed = seed
        self.drop_last = drop_last  # train loader only
        self.progress = progress
        self.row_index = row_index
        self.built: Built | None = None
        self.collator: Collator | None = None

    def prepare_data(self) -> None:
        self.task.build(self.paths, progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.built is None:
            self.built = self.task.build(self.paths, progress=self.progress)
            fraction = float(getattr(self.task, "train_fraction", 1.0))
            if fraction != 1.0:
                train = self.built.dataset["train"]
                self.built.dataset["train"] = train.select(train_subset(len(train), fraction))
            self.collator = Collator.for_task(
                self.task, self.built.manifest, self.pad_to_multiple_of
            )

    def _replicas(self) -> tuple[int, int]:
        """(processes, this process's rank) of the attached trainer, else (1, 0)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self.built is None:
            self.setup()
        split_class = IndexedArrowSplit if self.row_index else ArrowSplit
        dataset = split_class(self.built.dataset[split])
        replicas, rank = self._replicas()
        if train:
            sampler = StatefulDistributedSampler(
                dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=self.seed
            )
            # the loader's own generator only seeds workers: the global RNG is left alone
            generator = torch.Generator().manual_seed(self.seed)
            loader_class = StatefulDataLoader
        else:
            sampler = eval_sampler(dataset, replicas, rank)
            generator, loader_class = None, DataLoader
        return loader_class(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            generator=generator,
            drop_last=self.drop_last if train else False,
            collate_fn=_CollateAny(self.collator),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Any split in file order, nothing dropped (evaluating a checkpoint on train, say)."""
        return self._loader(split, train=False)
