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

Under DDP the val/test loaders shard with Lightning's `UnrepeatedDistributedSampler` (rank r
takes rows r, r + world, ...): every evaluation row is scored exactly once. Lightning's default
`DistributedSampler` would pad the shards with repeated rows, so accuracies would count some
rows twice. The torchmetrics objects of the module then sum the shards' counts across processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import pyarrow as pa
import torch
from datasets import Dataset
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from tasks.base import Built, Paths, Task
from tasks.collate import Collator


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


class _CollateAny:
    """Picklable wrapper: concatenates per-item tables, then calls the collator."""

    def __init__(self, collator: Collator) -> None:
        self.collator = collator

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        if isinstance(batch, list) and batch and isinstance(batch[0], pa.Table):
            batch = pa.concat_tables(batch)
        return self.collator(batch)


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
        self.built: Built | None = None
        self.collator: Collator | None = None

    def prepare_data(self) -> None:
        self.task.build(self.paths, progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.built is None:
            self.built = self.task.build(self.paths, progress=self.progress)
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
        dataset = ArrowSplit(self.built.dataset[split])
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
