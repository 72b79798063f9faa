"""One process of the 2-process SyncBatchNorm test (a light module: spawned processes import
it). Normalises its half of a batch with `normalization_type=syncbatchnorm` after the CPU swap,
back-propagates a rank-dependent loss and saves outputs, gradients and running statistics."""

from __future__ import annotations

import torch

from mega_lra.layers.norms import SequenceNorm
from mega_lra.training.distributed import sync_batchnorm_for_cpu


def sync_norm_worker(rank: int, world: int, init: str, x: torch.Tensor, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    norm = SequenceNorm("syncbatchnorm", x.size(-1))  # torch's SyncBatchNorm...
    assert sync_batchnorm_for_cpu(norm) == 1  # ...swapped for the gloo-capable one
    norm.train()
    part = x.chunk(world)[rank].clone().requires_grad_(True)
    weights = torch.arange(part.numel(), dtype=torch.float32).reshape(part.shape) + rank
    (norm(part) * weights).sum().backward()
    torch.save(
        {
            "y": norm(part.detach()).detach(),
            "grad": part.grad,
            "weight_grad": norm.norm.weight.grad,
            "running_mean": norm.norm.running_mean,
            "running_var": norm.norm.running_var,
        },
        f"{out}/rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()
