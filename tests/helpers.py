"""Shared test helpers: the tiny model configs (the one place they live), parameter perturbation,
and an independent naive Mega reference written from the paper's equations with explicit loops
(float64, one unpadded row)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from mega_lra.hf.configuration import MegaConfig
from mega_lra.layers.activations import ELEMENT_ATTENTION

ROOT = Path(__file__).resolve().parents[1]


def run_module(
    module: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: int = 600,
    **popen,
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` as a user runs it (a subprocess from `cwd`, the repository by
    default), output captured; `env` adds to (or, for None values, removes from) the
    environment. One thread per process: the tests' workers share the cores."""
    merged = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )


# The smallest values of the shared field names (DESIGN.md's model contract). `tiny(model)` keeps
# those that model's config file has, so a model added to conf/model/ shrinks with no entry here.
TINY_FIELDS = {
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "intermediate_size": 16,  # Mega's v (its NFFN and classifier widths follow it)
    "shared_representation_size": 4,
    "ema_projection_size": 2,
    "truncation": 64,
    "num_attention_heads": 2,
    "ffn_hidden_size": 8,
    "attention_dropout_prob": 0.0,  # lets CPU SDPA take its fused kernel at 16K
    "d_state": 4,  # S4's state size N (2 complex modes)
    "n_ssm": 2,  # S4's copies of (Lambda, P, B): a divisor of the tiny hidden_size
    "projected_length": 4,  # Linformer's k, Luna's l
    "window_size": 8,  # Local Attention's blocks, Longformer's window: patterns inside short inputs
}
TINY_CHUNK = 16  # models that chunk (use_chunking: true) attend within 16 tokens


def tiny(model: str) -> list[str]:
    """Hydra overrides that shrink `model=<model>` (any file in conf/model/) to a few hundred
    parameters along the same code paths."""
    from mega_lra.models.catalog import model_config

    fields = model_config(model)
    out = [f"model.{k}={v}" for k, v in TINY_FIELDS.items() if k in fields]
    if fields.get("use_chunking"):
        out.append(f"model.chunk_size={TINY_CHUNK}")
    return out


def tiny_config(**overrides) -> MegaConfig:
    fields = dict(
        vocab_size=37,
        hidden_size=16,
        num_hidden_layers=2,
        intermediate_size=24,
        shared_representation_size=8,
        ema_projection_size=4,
        nffn_hidden_size=20,
        max_positions=64,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        relative_positional_bias="simple",
        normalization_type="layernorm",
    )
    fields.update(overrides)
    return MegaConfig(**fields)


@torch.no_grad()
def perturb_(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move every parameter away from its init (zero biases, unit scales hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


# ------------------------------------------------------------------ naive reference
def naive_ema(ema, x: torch.Tensor) -> torch.Tensor:
    """SiLU(y + omega x), y_t = sum_{l<k} K1[l] x_{t-l} (+ sum_{l<k} K2[l] x_{t+l}); x (L, D)."""
    length, dim = x.shape
    dt = x.dtype
    p = torch.sigmoid(ema.damping_factor.to(dt)).squeeze(-1)  # (K, N)
    q = 1 - p * torch.sigmoid(ema.decay_factor.to(dt)).squeeze(-1)
    beta = ema.ema_expansion_matrix.to(dt).squeeze(-1)
    eta = ema.kernel_projection_matrix.to(dt) * math.sqrt(1.0 / ema.ndim)
    taps = length if ema.truncation is None else min(ema.truncation, length)
    kernel = torch.stack([(eta * p * beta * q**lag).sum(-1) for lag in range(taps)], dim=-1)
    y = torch.zeros_like(x)
    for t in range(length):
        for lag in range(taps):
            if t - lag >= 0:
                y[t] += kernel[:dim, lag] * x[t - lag]
            if ema.bidirectional and t + lag < length:
                y[t] += kernel[dim:, lag] * x[t + lag]
    return torch.nn.functional.silu(y + x * ema.residual_weight.to(dt))


def naive_attention_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """The Mega sub-layer on one unpadded row x (L, D), with explicit per-query loops."""
    silu = torch.nn.functional.silu
    act = layer.activation
    length = x.size(0)
    residual = x
    xn = layer.norm(x[None])[0] if layer.prenorm else x
    v = act(xn @ layer.v_proj.weight.T + layer.v_proj.bias)
    # no EMA (ema_projection_size = 0): its input takes the place of its output
    mx = xn if layer.ema_gate is None else naive_ema(layer.ema_gate, xn)
    base = mx @ layer.mx_proj.weight.T + layer.mx_proj.bias
    d, z, h = layer.hidden_size, layer.zdim, layer.intermediate_size
    u = torch.sigmoid(base[:, :d])
    zr = silu(base[:, d : d + z + h])
    zz, r = zr[:, :z], zr[:, z:]
    hx = base[:, d + z + h :]
    q = zz * layer.qk_weight[0] + layer.qk_bias[0]
    k = zz * layer.qk_weight[1] + layer.qk_bias[1]
    chunk = layer.chunk_size if 0 < layer.chunk_size < length else length
    out = torch.zeros(length, h, dtype=x.dtype)
    for start in range(0, length, chunk):
        members = list(range(start, min(start + chunk, length)))
        for i in members:
            keys = [j for j in members if not layer.causal or j <= i]
            scores = []
            for j in keys:
                bias = layer.rel_pos_bias(torch.tensor([i - start]), torch.tensor([j - start])).to(
                    x.dtype
                )[0, 0]
                if layer.attention_activation == "softmax":
                    scores.append(q[i] @ k[j] / math.sqrt(z) + bias)
                else:
                    scores.append(q[i] @ k[j] / len(keys) + bias)
            scores = torch.stack(scores)
            if layer.attention_activation == "softmax":
                weights = torch.softmax(scores, dim=0)
            else:
                weights = ELEMENT_ATTENTION[layer.attention_activation](scores)
            out[i] = (weights[:, None] * v[keys]).sum(0)
    hidden = act(hx + (out * r) @ layer.h_proj.weight.T + layer.h_proj.bias)
    y = residual + u * (hidden - residual)
    return layer.norm(y[None])[0] if not layer.prenorm else y


class TinyLM(torch.nn.Module):
    """Embedding -> Mega blocks -> vocabulary logits: the smallest causal LM for decoding tests."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        from mega_lra.layers.block import MegaBlock

        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = torch.nn.ModuleList(
            MegaBlock(config) for _ in range(config.num_hidden_layers)
        )
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, ids, mask=None, states=None, use_cache=False):
        from mega_lra.layers.block import run_blocks

        x = self.embed(ids)
        x, states, _ = run_blocks(self.blocks, x, mask, states, use_cache=use_cache)
        return self.head(x), states
