"""Cost probes for the attention baselines: what a method really builds, not how long it takes.

- `largest_intermediate(fn)`: the numel of the largest tensor any aten op returns while `fn` runs
  (forward and backward alike). A method that ever forms an L x L score matrix, even a masked
  one, shows it here as >= L^2 elements.
- `saved_bytes(fn)`: bytes of the tensors autograd saves for backward during `fn` (the
  activation memory of a training step).
- `growth(...)`: both measures at two lengths, as ratios.

Both count elements, so they are exact and independent of the machine and of timing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _Largest(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.op = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.op = t.numel(), str(func)
        return out


def largest_intermediate(fn: Callable[[], object]) -> tuple[int, str]:
    """(numel, op name) of the largest tensor created while `fn()` runs."""
    probe = _Largest()
    with probe:
        fn()
    return probe.largest, probe.op


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes autograd saves for backward while `fn()` runs (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def training_step(module: torch.nn.Module, length: int, width: int, batch: int = 1):
    """A closure: forward+backward of `module(x, mask)` on (batch, length, width) random input with
    the last eighth of each row padded."""

    def step() -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, length, width, generator=gen, requires_grad=True)
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[:, length - length // 8 :] = False
        module(x, mask).square().sum().backward()

    return step


def growth(module: torch.nn.Module, width: int, short: int = 1024, long: int = 4096):
    """(largest-intermediate ratio, saved-bytes ratio, largest at `long`) from `short` to `long`
    tokens; linear cost gives about long / short for both."""
    small = training_step(module, short, width)
    big = training_step(module, long, width)
    l_small, _ = largest_intermediate(small)
    l_big, op = largest_intermediate(big)
    return l_big / l_small, saved_bytes(big) / saved_bytes(small), (l_big, op)
