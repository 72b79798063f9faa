"""Shared helpers for the scripts that run inside the transformers-4.41.2 reference env.

Imported by ``generate_fixtures.py`` and ``run_model.py`` (never by the ``mega_lra`` library,
which cannot import transformers). What lives here:

- :func:`load_model`: load a checkpoint folder with the transformers class named in its
  ``config.json`` (``architectures[0]``), in eval mode, in float32 or float64.
- :func:`float64_reference`: the float64 patches (a context manager). HF's Mega computes two
  things in float32 whatever the model dtype; inside this context they follow the model dtype
  instead (same maths, only precision), and every op is checked to stay in float64.
- :func:`forward_outputs`, :func:`cached_decode`: run a model and return its outputs as a flat
  ``{name: tensor}`` dict with the fixture naming (``logits``, ``hidden_states.0``, ...).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from torch.overrides import TorchFunctionMode
from transformers.models.mega import modeling_mega

ARCHITECTURES = (
    "MegaModel",
    "MegaForCausalLM",
    "MegaForMaskedLM",
    "MegaForSequenceClassification",
    "MegaForMultipleChoice",
    "MegaForTokenClassification",
    "MegaForQuestionAnswering",
)
# Forward arguments that may appear in an inputs file; other keys (e.g. "f64.logits") are ignored.
INPUT_NAMES = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
)
# Model outputs that are not recorded: HF's cache layout is not ours, attentions are not compared.
SKIPPED_OUTPUTS = ("past_key_values", "attentions", "cross_attentions")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
PREFIX = {torch.float32: "f32", torch.float64: "f64"}


def versions() -> dict[str, str]:
    return {"transformers": transformers.__version__, "torch": torch.__version__}


def model_class(folder: Path | str) -> type:
    config = json.loads((Path(folder) / "config.json").read_text())
    archs = config.get("architectures") or ["MegaModel"]
    name = archs[0]
    if name not in ARCHITECTURES:
        raise SystemExit(
            f"{folder}/config.json: architectures[0]={name!r}, expected {ARCHITECTURES}"
        )
    return getattr(transformers, name)


def load_model(folder: Path | str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load ``folder`` with its transformers class, in eval mode, with every key accounted for.

    The model is loaded in float32 (as stored) and then cast, so the float64 model holds exactly
    the float32 checkpoint values. A fresh load also means no stale eval-mode EMA kernel cache.
    """
    cls = model_class(folder)
    model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k != "mismatched_keys"}
    if info.get("mismatched_keys"):
        problems["mismatched_keys"] = info["mismatched_keys"]
    if problems:
        raise SystemExit(f"{folder}: transformers did not load the checkpoint cleanly: {problems}")
    model.to(dtype)
    model.eval()
    return model


def model_inputs(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Forward kwargs from an inputs dict: known names only; float labels cast to ``dtype``."""
    kwargs = {}
    for name in INPUT_NAMES:
        if name in tensors:
            value = tensors[name]
            kwargs[name] = value.to(dtype) if value.is_floating_point() else value
    return kwargs


def _flatten(output, prefix: str) -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in output.items():
        if key in SKIPPED_OUTPUTS or value is None:
            continue
        if isinstance(value, torch.Tensor):
            flat[f"{prefix}.{key}"] = value.detach().clone().contiguous()
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                flat[f"{prefix}.{key}.{i}"] = item.detach().clone().contiguous()
        else:
            raise TypeError(f"unexpected output {key}: {type(value)}")
    return flat


@torch.no_grad()
def forward_outputs(
    model: torch.nn.Module,
    kwargs: dict[str, torch.Tensor],
    *,
    hidden_states: bool = True,
    use_cache: bool | None = False,
) -> dict[str, torch.Tensor]:
    """One forward pass; returns ``{"<f32|f64>.<output>": tensor}``.

    ``use_cache`` is passed only to decoders (CausalLM / MegaModel with ``is_decoder``); ``None``
    keeps HF's default (True for decoders). Fixtures record ``use_cache=False``.
    """
    dtype = next(model.parameters()).dtype
    extra = {"output_hidden_states": hidden_states, "return_dict": True}
    if model.config.is_decoder and type(model).__name__ in ("MegaModel", "MegaForCausalLM"):
        extra["use_cache"] = use_cache
    out = model(**kwargs, **extra)
    return _flatten(out, PREFIX[dtype])


@torch.no_grad()
def cached_decode(
    model: torch.nn.Module, kwargs: dict[str, torch.Tensor], prompt_len: int
) -> torch.Tensor:
    """Logits of HF's incremental decoding: the prompt in one call, then one token per call.

    Returns (B, L, V): rows [0, prompt_len) from the prompt call, then one row per step. Each
    step passes the attention mask up to and including that token, as ``generate`` does.
    """
    ids = kwargs["input_ids"]
    mask = kwargs.get("attention_mask")
    types = kwargs.get("token_type_ids")
    length = ids.size(1)
    if not 1 <= prompt_len < length:
        raise ValueError(f"prompt_len must be in [1, {length}), got {prompt_len}")

    def call(start: int, stop: int, past):
        step = {"input_ids": ids[:, start:stop], "past_key_values": past, "use_cache": True}
        if mask is not None:
            step["attention_mask"] = mask[:, :stop]
        if types is not None:
            step["token_type_ids"] = types[:, start:stop]
        return model(**step, return_dict=True)

    out = call(0, prompt_len, None)
    logits = [out.logits]
    past = out.past_key_values
    for t in range(prompt_len, length):
        out = call(t, t + 1, past)
        logits.append(out.logits)
        past = out.past_key_values
    return torch.cat(logits, dim=1)


# ---------------------------------------------------------------------------------------------
# float64 patches
# ---------------------------------------------------------------------------------------------
_Ema = modeling_mega.MegaMultiDimensionDampedEma
_Rotary = modeling_mega.MegaRotaryRelativePositionalBias


class Float64Check:
    """Counts of what the float64 patches did, for the caller to assert on."""

    def __init__(self) -> None:
        self.fft_calls = 0
        self.sinusoid_calls = 0
        self.ops_checked = 0
        self.integer_float32 = 0  # float32 tensors holding small integers only (see below)
        self.violations: list[str] = []


def _fft_convolution_keep_dtype(check: Float64Check):
    # Patch 1. HF: torch.fft.rfft(inputs.float(), ...) and rfft(kernel.float(), ...). Here the
    # casts are dropped (inputs and kernel are already float64), nothing else changes.
    def fft_convolution(self, inputs, kernel, length):
        if inputs.dtype != torch.float64 or kernel.dtype != torch.float64:
            raise AssertionError(f"patched FFT got {inputs.dtype} / {kernel.dtype}, not float64")
        check.fft_calls += 1
        inputs_fft = torch.fft.rfft(inputs, n=2 * length)
        kernel_fft = torch.fft.rfft(kernel, n=2 * length)
        out = torch.fft.irfft(inputs_fft * kernel_fft, n=2 * length)
        if out.dtype != torch.float64:
            raise AssertionError(f"patched FFT produced {out.dtype}")
        return out

    return fft_convolution


def _sinusoids_float64(check: Float64Check):
    # Patch 2. HF builds the rotary sin/cos table with arange(..).float() and
    # arange(.., dtype=torch.float) (float32) and later casts it to the model dtype. Here the
    # same formula runs in float64.
    def get_sinusoid_embeddings(max_positions: int, embedding_dim: int):
        check.sinusoid_calls += 1
        half_dim = embedding_dim // 2
        emb = math.log(10000) / half_dim
        emb = torch.exp(torch.arange(half_dim, dtype=torch.int64).to(torch.float64) * -emb)
        emb = torch.arange(max_positions, dtype=torch.float64).unsqueeze(1) * emb.unsqueeze(0)
        return torch.sin(emb), torch.cos(emb)

    return staticmethod(get_sinusoid_embeddings)


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
    elif hasattr(obj, "to_tuple"):  # transformers ModelOutput
        yield from _tensors(obj.to_tuple())


def _bad_dtype(t: torch.Tensor) -> bool:
    if t.is_complex():
        return t.dtype != torch.complex128
    return t.is_floating_point() and t.dtype != torch.float64


def _is_exact_small_integers(t: torch.Tensor) -> bool:
    # A float32 tensor whose values are all integers below 2**24 is exact: no precision is lost.
    # HF makes one: element attention's `lengths.clamp(min=1.0)` turns integer key counts into
    # float32 (a Python float bound promotes to the default dtype), then divides a float64 by it.
    if t.dtype != torch.float32 or t.numel() > 1_000_000:
        return False
    return bool(torch.all((t == t.round()) & (t.abs() < 2**24)))


class _NoFloat32Mode(TorchFunctionMode):
    """Records every torch op whose tensor inputs or outputs are floating but not float64."""

    def __init__(self, check: Float64Check) -> None:
        super().__init__()
        self.check = check

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        self.check.ops_checked += 1
        for t in (*_tensors(args), *_tensors(kwargs), *_tensors(result)):
            if _bad_dtype(t):
                if _is_exact_small_integers(t):
                    self.check.integer_float32 += 1
                    continue
                name = getattr(func, "__qualname__", None) or getattr(func, "__name__", str(func))
                self.check.violations.append(f"{name}: {t.dtype} {tuple(t.shape)}")
        return result


@contextlib.contextmanager
def float64_reference(model: torch.nn.Module, *, patch: bool = True) -> Iterator[Float64Check]:
    """Apply the float64 patches to HF's Mega classes while the block runs, and verify them.

    The model must already be float64. On entry the rotary sin/cos tables are rebuilt with the
    patched (float64) formula. While the block runs, every torch op is checked (a
    TorchFunctionMode) and every submodule's output too (forward hooks); on exit an
    AssertionError lists any float32 (or complex64) tensor seen. The yielded
    :class:`Float64Check` counts the patched FFT calls (callers assert it ran). The original
    class attributes are restored on exit. ``patch=False`` runs the same checks without the
    patches, to show that the checks catch HF's casts.
    """
    for name, p in [*model.named_parameters(), *model.named_buffers()]:
        if p.is_floating_point() and p.dtype != torch.float64:
            raise AssertionError(f"float64_reference: {name} is {p.dtype}")
    check = Float64Check()
    saved = (_Ema.fft_convolution, _Rotary.__dict__["get_sinusoid_embeddings"])
    if patch:
        _Ema.fft_convolution = _fft_convolution_keep_dtype(check)
        _Rotary.get_sinusoid_embeddings = _sinusoids_float64(check)

    def hook(module, args, output):
        for t in _tensors(output):
            if _bad_dtype(t):
                check.violations.append(f"output of {type(module).__name__}: {t.dtype}")

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        for module in model.modules():
            if patch and isinstance(module, _Rotary):
                module.sine, module.cosine = _Rotary.get_sinusoid_embeddings(
                    module.config.max_positions, module.embed_dim
                )
        with _NoFloat32Mode(check):
            yield check
    finally:
        for h in handles:
            h.remove()
        _Ema.fft_convolution, _Rotary.get_sinusoid_embeddings = saved
    if check.violations:
        shown = sorted(set(check.violations))[:20]
        raise AssertionError("float32 tensors in a float64 forward:\n  " + "\n  ".join(shown))
