"""Parity with the real transformers 4.41.2 Mega.

Forward direction: every fixture in tests/hf/fixtures (made by `make hf-fixtures` from random,
perturbed HF models; see its README) loads with our `from_pretrained` and reproduces HF's outputs
on real (non-padded) positions: relative error < 1e-10 in float64, < 1e-4 in float32.
Reverse direction: a folder written by our `save_pretrained` loads in transformers (run in the
separate reference environment, built on demand) and gives our outputs.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mega_lra
from mega_lra.hf.state_dict import CheckpointError

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "meta.json").is_file())
MODEL_CASES = [c for c in CASES if c != "cross_attention_refuse"]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}
PREFIX = {torch.float64: "f64", torch.float32: "f32"}
ARGS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
)


def load_case(case: str, **overrides):
    meta = json.loads((FIXTURES / case / "meta.json").read_text())
    cls = getattr(mega_lra, meta["class"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rmsnorm case warns how to reproduce HF
        model = cls.from_pretrained(FIXTURES / case, **overrides)
    return meta, model, load_file(str(FIXTURES / case / "io.safetensors"))


def model_inputs(io: dict, dtype: torch.dtype) -> dict:
    kwargs = {k: io[k] for k in ARGS if k in io}
    if "labels" in kwargs and kwargs["labels"].is_floating_point():
        kwargs["labels"] = kwargs["labels"].to(dtype)
    return kwargs


def run(model, kwargs: dict) -> dict[str, torch.Tensor]:
    extra = {"use_cache": False} if model.config.is_decoder else {}
    out = model(**kwargs, output_hidden_states=True, **extra)
    flat = {}
    for name in out:
        value = out[name]
        if name == "hidden_states":
            flat.update({f"hidden_states.{i}": h for i, h in enumerate(value)})
        elif isinstance(value, torch.Tensor):
            flat[name] = value
    return flat


def cached_logits(model, kwargs: dict, prompt: int) -> torch.Tensor:
    """The prompt in one call (use_cache=True), then one token per call with the state."""
    ids = kwargs["input_ids"]
    mask, types = kwargs.get("attention_mask"), kwargs.get("token_type_ids")

    def cut(t, a, b):
        return None if t is None else t[:, a:b]

    out = model(
        ids[:, :prompt],
        attention_mask=cut(mask, 0, prompt),
        token_type_ids=cut(types, 0, prompt),
        use_cache=True,
    )
    logits, cache = [out.logits], out.past_key_values
    for t in range(prompt, ids.size(1)):
        out = model(
            ids[:, t : t + 1],
            attention_mask=cut(mask, 0, t + 1),  # HF's convention: the mask up to this token
            token_type_ids=cut(types, t, t + 1),
            past_key_values=cache,
        )
        logits.append(out.logits)
        cache = out.past_key_values
    return torch.cat(logits, dim=1)


def rel_error(ours: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor | None) -> float:
    if valid is not None:
        ours, ref = ours[valid], ref[valid]
    ours = ours.to(ref.dtype)
    return float((ours - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


def compare(case: str, meta: dict, ours: dict, io: dict, dtype: torch.dtype) -> None:
    prefix = PREFIX[dtype]
    checked = 0
    for name, info in meta["outputs"].items():
        if info.get("hf_bug") or name not in ours:
            continue
        ref = io[f"{prefix}.{name}"]
        valid = io.get(info["valid"]) if info.get("valid") else None
        assert ours[name].shape == ref.shape, f"{case}: {name} shape"
        err = rel_error(ours[name], ref, valid)
        assert err < TOLERANCE[dtype], f"{case}: {name} relative error {err:.2e} ({prefix})"
        checked += 1
    assert checked >= 2, f"{case}: nothing compared"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_outputs_match_transformers(case, dtype):
    overrides = {"rmsnorm_hf_compat": True} if "rmsnorm" in case else {}
    meta, model, io = load_case(case, **overrides)
    model = model.to(dtype)
    kwargs = model_inputs(io, dtype)
    with torch.no_grad():
        ours = run(model, kwargs)
        if "cached_logits" in meta["outputs"]:
            prompt = int(re.search(r"prompt of (\d+)", meta["outputs"]["cached_logits"]["how"])[1])
            ours["cached_logits"] = cached_logits(model, kwargs, prompt)
    compare(case, meta, ours, io, dtype)


def test_truncation_holds_on_the_cache_path_where_hf_ignores_it():
    meta, model, io = load_case("causal_lm_truncation")
    model = model.double()
    kwargs = model_inputs(io, torch.float64)
    with torch.no_grad():
        cached = model(**kwargs, use_cache=True).logits  # HF's default path
        hf_bug = io["f64.logits_use_cache_true"]
    valid = io.get("valid.logits")
    assert rel_error(cached, io["f64.logits"], valid) < 1e-10
    assert rel_error(cached, hf_bug, valid) > 1e-3  # HF's use_cache=True output is wrong


def test_laplace_decoding_is_exact_where_hf_is_not():
    meta, model, io = load_case("causal_lm_laplace")
    model = model.double()
    kwargs = model_inputs(io, torch.float64)
    kwargs.pop("labels", None)
    with torch.no_grad():
        decoded = cached_logits(model, kwargs, 3)
    assert rel_error(decoded, io["f64.logits"], io.get("valid.logits")) < 1e-10


def test_real_rmsnorm_differs_from_hf_bug_by_default():
    meta, model, io = load_case("model_rmsnorm_hf_bug")
    kwargs = model_inputs(io, torch.float64)
    with torch.no_grad():
        ours = model.double()(**kwargs).last_hidden_state
    assert rel_error(ours, io["f64.last_hidden_state"], io.get("valid.last_hidden_state")) > 1e-3


def test_cross_attention_checkpoint_is_refused():
    with pytest.raises(CheckpointError, match="cross-attention is out of scope"):
        mega_lra.MegaModel.from_pretrained(FIXTURES / "cross_attention_refuse")


@pytest.mark.parametrize("case", MODEL_CASES)
def test_save_pretrained_round_trip_keeps_outputs(case, tmp_path):
    overrides = {"rmsnorm_hf_compat": True} if "rmsnorm" in case else {}
    meta, model, io = load_case(case, **overrides)
    model.save_pretrained(tmp_path / case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = type(model).from_pretrained(tmp_path / case, **overrides)
    kwargs = model_inputs(io, torch.float32)
    with torch.no_grad():
        a, b = run(model, kwargs), run(again, kwargs)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


# ------------------------------------------------------------ reverse direction
REVERSE_CASES = [
    "model_chunked_softmax",
    "model_truncation_batchnorm_postnorm",
    "masked_lm",
    "causal_lm_cached",
    "seq_cls_single_label",
    "multiple_choice",
    "token_cls_unidirectional",
    "question_answering_chunked",
]


@pytest.mark.parametrize("case", REVERSE_CASES)
def test_transformers_loads_what_save_pretrained_writes(case, tmp_path):
    from tools.hf_reference.envs import run_reference

    meta, model, io = load_case(case)
    with torch.no_grad():  # our own weights, not the fixture's
        gen = torch.Generator().manual_seed(7)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    folder = model.save_pretrained(tmp_path / "ours")
    inputs = {k: v for k, v in io.items() if k in ARGS}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    run_reference(
        [
            "run_model.py",
            str(folder),
            str(tmp_path / "inputs.safetensors"),
            str(tmp_path / "hf.safetensors"),
            "--dtype",
            "float64",
        ],
        timeout=600,
    )
    hf = load_file(str(tmp_path / "hf.safetensors"))
    model = model.double()
    with torch.no_grad():
        ours = run(model, model_inputs(io, torch.float64))
    compare(case, meta, ours, hf, torch.float64)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_transformers_loads_a_sharded_save(tmp_path, safe):
    """A checkpoint split into shards (+ index) by save_pretrained loads in transformers 4.41.2
    with every key accounted for, gives our outputs, and loads back here unchanged."""
    from tools.hf_reference.envs import run_reference

    case = "masked_lm"
    meta, model, io = load_case(case)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(11)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    total = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    folder = model.save_pretrained(
        tmp_path / "ours", max_shard_size=total // 4, safe_serialization=safe
    )
    index_name = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    shards = set(json.loads((folder / index_name).read_text())["weight_map"].values())
    assert len(shards) >= 4 and all((folder / s).is_file() for s in shards)
    inputs = {k: v for k, v in io.items() if k in ARGS}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    run_reference(
        [
            "run_model.py",
            str(folder),
            str(tmp_path / "inputs.safetensors"),
            str(tmp_path / "hf.safetensors"),
            "--dtype",
            "float64",
        ],
        timeout=600,
    )
    hf = load_file(str(tmp_path / "hf.safetensors"))
    again = type(model).from_pretrained(folder)
    with torch.no_grad():
        kwargs = model_inputs(io, torch.float32)
        a, b = run(model, kwargs), run(again, kwargs)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
        ours = run(model.double(), model_inputs(io, torch.float64))
    compare(case, meta, ours, hf, torch.float64)
