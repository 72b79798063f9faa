"""What training on several processes (Lightning DDP, one node or many) needs beyond Lightning.

- **RNG states per rank.** Only rank 0 writes a checkpoint, and each process draws its own random
  numbers (dropout masks differ with the batch shapes of its shard). `all_rank_rng_states`
  gathers every process's torch / numpy / Python (/ CUDA) states into rank 0's checkpoint;
  `rng_states_for_rank` gives each process its own states back on resume, so a resumed DDP run
  replays exactly what the uninterrupted one would have done. A checkpoint from another world
  size (or from one process) gives every process the saved rank-0 states, with a warning: the
  run continues correctly, just not bitwise as the uninterrupted one.
- **SyncBatchNorm without GPUs.** `torch.nn.SyncBatchNorm` refuses CPU modules under DDP (gloo).
  `sync_batchnorm_for_cpu` swaps each one for the layer's `MaskedBatchNorm(sync=True)`, which
  sums the same statistics over processes with one all-reduce that gloo runs: the same
  normalisation (padding counted, as SyncBatchNorm counts it) and the same parameter and buffer
  names, so checkpoints stay interchangeable.
- **SLURM.** Under SLURM the jobs are requeued by submitit (SIGUSR2, `hydra/launcher=slurm`),
  never by Lightning's own auto-requeue (SIGUSR1): `cluster_plugins` gives the Trainer a
  `SLURMEnvironment(auto_requeue=False)`, and a requeued job resumes from `last.ckpt`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mega_lra.layers.norms import MaskedBatchNorm, SequenceNorm


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_rank_rng_states(states: Mapping[str, Any]) -> list[Any] | None:
    """Every process's `states` (index = global rank); None on one process.

    A collective: all processes must call it together (Lightning builds a checkpoint on every
    rank, then only rank 0 writes it)."""
    if _world() == 1:
        return None
    # as torch.save bytes: all_gather_object's own pickling of tensors fails in torch 2.13
    buffer = io.BytesIO()
    torch.save(dict(states), buffer)
    gathered: list[Any] = [None] * _world()
    dist.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(b), map_location="cpu", weights_only=True) for b in gathered]


def rng_states_for_rank(
    saved: Mapping[str, Any], rank: int, world_size: int
) -> Mapping[str, Any] | None:
    """The RNG states process `rank` restores from a checkpoint's `mega_lra` entry."""
    by_rank = saved.get("rng_states_by_rank")
    if by_rank is not None and len(by_rank) == world_size:
        return by_rank[rank]
    if world_size > 1 or by_rank is not None:
        saved_world = 1 if by_rank is None else len(by_rank)
        warnings.warn(
            f"resuming on {world_size} process(es) from a checkpoint written by {saved_world}: "
            "every process restores rank 0's RNG states, so dropout draws differ from an "
            "uninterrupted run (the run itself continues correctly)",
            stacklevel=2,
        )
    return saved.get("rng_states")


def sync_batchnorm_for_cpu(model: nn.Module) -> int:
    """Swap every `nn.SyncBatchNorm` inside a `SequenceNorm` for `MaskedBatchNorm(sync=True)`
    (state copied); returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        if isinstance(module, SequenceNorm) and isinstance(module.norm, nn.SyncBatchNorm):
            old = module.norm
            new = MaskedBatchNorm(
                old.num_features,
                eps=old.eps,
                momentum=old.momentum,
                affine=old.affine,
                track_running_stats=old.track_running_stats,
                sync=True,
            )
            new.load_state_dict(old.state_dict())
            new.train(old.training)
            module.norm = new
            swapped += 1
    return swapped


def prepare_model_for_processes(model: nn.Module, world_size: int, device_type: str) -> None:
    """Make `model` trainable on `world_size` processes of `device_type` (before fit)."""
    if world_size <= 1 or device_type == "cuda":
        return
    swapped = sync_batchnorm_for_cpu(model)
    if swapped:
        warnings.warn(
            f"normalization_type=syncbatchnorm on {world_size} {device_type} processes: "
            "torch's SyncBatchNorm needs GPUs, so its statistics are synchronised by mega-lra's "
            f"MaskedBatchNorm all-reduce instead ({swapped} layers; same statistics, same "
            "parameter names)",
            stacklevel=2,
        )


def cluster_plugins() -> Sequence[Any]:
    """Trainer plugins for the cluster this runs on: under SLURM, Lightning's auto-requeue off."""
    from lightning.fabric.plugins.environments import SLURMEnvironment  # (keeps this import light)

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []
