"""Activation functions by config name, and Mega's element-wise attention functions.

laplace(x) = 0.5 * (1 + erf((x - mu) / (sigma * sqrt(2)))) with mu = 0.707107, sigma = 0.282095,
the constants (sqrt(1/2) and sqrt(1/(4 pi)), rounded) of the original code and HF (paper App. C.1);
relu2(x) = relu(x)^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LAPLACE_MU = 0.707107
LAPLACE_SIGMA = 0.282095


def gelu_accurate(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def laplace(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf((x - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))))


def relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_accurate": gelu_accurate,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}

ELEMENT_ATTENTION: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "laplace": laplace,
    "relu2": relu2,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation {name!r}: expected one of {sorted(_ACTIVATIONS)}") from None
