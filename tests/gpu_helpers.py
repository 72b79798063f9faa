"""Device parametrisation for tests that also run on CUDA: the CUDA variant carries the `gpu`
marker and skips, with the reason printed, where torch sees no CUDA device."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False here)"
)
GPU_MARKS = (pytest.mark.gpu, requires_cuda)
DEVICES = ["cpu", pytest.param("cuda", marks=GPU_MARKS, id="cuda")]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).norm() / ref.norm().clamp(min=1e-30))
