"""The transformers-4.41.2 parity fixtures and the reference-env manager, checked without the env.

The fixtures (tests/hf/fixtures/, written by `make hf-fixtures`) are checked for internal
consistency: every checkpoint key and shape is what hf_mega.md section 3 says for its config,
inputs and outputs are all there, float32 and float64 outputs agree, cached decoding equals the
full forward where recorded, the case list covers the config space, and the whole set stays
small. `tools.hf_reference.envs` is checked for its stamp/lock logic with a stand-in build.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tools.hf_reference import envs as hf_reference

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "meta.json").is_file())
MAX_TOTAL_BYTES = 5_000_000
INPUT_NAMES = {
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
}


def load_case(name: str) -> tuple[dict, dict]:
    folder = FIXTURES / name
    return json.loads((folder / "config.json").read_text()), json.loads(
        (folder / "meta.json").read_text()
    )


def checkpoint_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with safe_open(str(FIXTURES / name / "model.safetensors"), framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


# ---------------------------------------------------------------------------------------------
# expected state-dict shapes, written from hf_mega.md section 3
# ---------------------------------------------------------------------------------------------
def norm_shapes(prefix: str, cfg: dict) -> dict[str, tuple[int, ...]]:
    h, kind, affine = cfg["hidden_size"], cfg["normalization_type"], cfg["norm_affine"]
    shapes: dict[str, tuple[int, ...]] = {}
    if kind == "scalenorm" and affine:
        shapes["scalar"] = (1,)
    elif kind in ("layernorm", "batchnorm") and affine:
        shapes["weight"], shapes["bias"] = (h,), (h,)
    elif kind == "rmsnorm" and affine:
        shapes["weight"] = (h,)
    if kind == "batchnorm":  # running statistics are kept even without affine parameters
        shapes |= {"running_mean": (h,), "running_var": (h,), "num_batches_tracked": ()}
    return {f"{prefix}norm.norm.{k}": v for k, v in shapes.items()}


def rel_pos_shapes(prefix: str, cfg: dict) -> dict[str, tuple[int, ...]]:
    z = cfg["shared_representation_size"]
    if cfg["relative_positional_bias"] == "rotary":
        return {
            f"{prefix}rel_pos_bias.{k}": v for k, v in (("alpha", (1, z)), ("b_param", (1, z)))
        } | {f"{prefix}rel_pos_bias._float_tensor": (1,)}
    return {f"{prefix}rel_pos_bias.rel_pos_bias": (2 * cfg["max_positions"] - 1,)}


def linear(prefix: str, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out_features, in_features), f"{prefix}.bias": (out_features,)}


def backbone_shapes(cfg: dict, pooler: bool) -> dict[str, tuple[int, ...]]:
    v, h, i = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    z, n, f = cfg["shared_representation_size"], cfg["ema_projection_size"], cfg["nffn_hidden_size"]
    d = 2 * h if cfg["bidirectional"] else h
    shapes = {"embedding_layer.word_embeddings.weight": (v, h)}
    if cfg["add_token_type_embeddings"]:
        shapes["embedding_layer.token_type_embeddings.weight"] = (cfg["type_vocab_size"], h)
    for layer in range(cfg["num_hidden_layers"]):
        m = f"layers.{layer}.mega_layer."
        shapes |= {f"{m}qk_weight": (2, z), f"{m}qk_bias": (2, z)}
        shapes |= {
            f"{m}ema_gate.damping_factor": (d, n, 1),
            f"{m}ema_gate.decay_factor": (d, n, 1),
            f"{m}ema_gate.ema_expansion_matrix": (d, n, 1),
            f"{m}ema_gate.kernel_projection_matrix": (d, n),
            f"{m}ema_gate.residual_weight": (h,),
        }
        shapes |= linear(f"{m}v_proj", i, h) | linear(f"{m}mx_proj", z + i + 2 * h, h)
        shapes |= linear(f"{m}h_proj", h, i)
        shapes |= norm_shapes(m, cfg) | rel_pos_shapes(m, cfg)
        if cfg["use_normalized_ffn"]:
            ffn = f"layers.{layer}.nffn."
            shapes |= norm_shapes(ffn, cfg) | linear(f"{ffn}fc1", f, h) | linear(f"{ffn}fc2", h, f)
        if cfg.get("add_cross_attention"):
            x = f"layers.{layer}.cross_attn."
            shapes |= norm_shapes(x, cfg) | rel_pos_shapes(x, cfg)
            shapes |= linear(f"{x}k_proj", z, h) | linear(f"{x}v_proj", h, h)
            shapes |= linear(f"{x}q_proj", 2 * h + z, h) | linear(f"{x}h_proj", h, h)
    if pooler:
        shapes |= linear("pooler.dense", h, h)
    return shapes


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Keys and shapes `save_pretrained` writes for this config (tied head weights are left out)."""
    arch = cfg["architectures"][0]
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    num_labels = len(cfg.get("id2label") or {0: 0, 1: 1})
    if arch == "MegaModel":
        return backbone_shapes(cfg, pooler=True)
    backbone = backbone_shapes(cfg, pooler=arch == "MegaForMultipleChoice")
    shapes = {f"mega.{k}": s for k, s in backbone.items()}
    if arch in ("MegaForMaskedLM", "MegaForCausalLM"):
        head = "mlm_head" if arch == "MegaForMaskedLM" else "lm_head"
        if cfg["add_lm_hidden_dense_layer"]:
            shapes |= linear("dense", h, h)
        shapes |= linear(head, v, h)
        if cfg.get("tie_word_embeddings", True):
            del shapes[f"{head}.weight"]  # tied to the word embeddings: not written
    elif arch == "MegaForSequenceClassification":
        shapes |= linear("classifier.dense", h, h) | linear("classifier.out_proj", num_labels, h)
    elif arch == "MegaForMultipleChoice":
        shapes |= linear("classifier", 1, h)
    elif arch == "MegaForTokenClassification":
        shapes |= linear("classifier", num_labels, h)
    elif arch == "MegaForQuestionAnswering":
        shapes |= linear("qa_outputs", num_labels, h)
    else:
        raise AssertionError(f"unknown architecture {arch}")
    return shapes


def renamed(key: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        key = key.replace(old, new)
    return key


# ---------------------------------------------------------------------------------------------
# fixture tests
# ---------------------------------------------------------------------------------------------
def test_fixture_set_is_small_and_complete():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"fixtures take {total} bytes"
    assert (FIXTURES / "README.md").is_file()
    classes = {load_case(name)[0]["architectures"][0] for name in CASES}
    assert classes == {
        "MegaModel",
        "MegaForCausalLM",
        "MegaForMaskedLM",
        "MegaForSequenceClassification",
        "MegaForMultipleChoice",
        "MegaForTokenClassification",
        "MegaForQuestionAnswering",
    }


def test_fixtures_cover_the_config_space():
    configs = [load_case(name)[0] for name in CASES]

    def seen(field: str) -> set:
        # save_pretrained leaves out inherited fields at their default (is_decoder: false)
        return {json.dumps(c.get(field, False if field == "is_decoder" else None)) for c in configs}

    for field in (
        "use_chunking",
        "bidirectional",
        "is_decoder",
        "normalize_before_mega",
        "normalize_before_ffn",
        "use_normalized_ffn",
        "add_token_type_embeddings",
        "add_lm_hidden_dense_layer",
        "norm_affine",
    ):
        assert seen(field) == {"true", "false"}, field
    assert seen("attention_activation") == {'"softmax"', '"laplace"', '"relu2"'}
    assert seen("relative_positional_bias") == {'"rotary"', '"simple"'}
    assert {'"layernorm"', '"scalenorm"', '"batchnorm"', '"rmsnorm"'} <= seen("normalization_type")
    assert "null" in seen("truncation") and len(seen("truncation")) > 1
    lm_dense = {
        c["add_lm_hidden_dense_layer"]
        for c in configs
        if c["architectures"][0] in ("MegaForMaskedLM", "MegaForCausalLM")
    }
    assert lm_dense == {True, False}
    seq_cls = [c for c in configs if c["architectures"][0] == "MegaForSequenceClassification"]
    assert {(c.get("problem_type"), len(c["id2label"])) for c in seq_cls} >= {
        (None, 3),  # single label, inferred from integer labels
        ("multi_label_classification", 4),
        (None, 1),  # regression, inferred from num_labels == 1
    }
    metas = [load_case(name)[1] for name in CASES]
    assert {m.get("padding") for m in metas} >= {"left", "right", None}
    assert any("cached_logits" in m["outputs"] for m in metas)
    assert any(m.get("expect") == "refuse" for m in metas)
    assert any("key_renames" in m for m in metas)


@pytest.mark.parametrize("name", CASES)
def test_checkpoint_keys_and_shapes_match_the_config(name):
    cfg, meta = load_case(name)
    assert cfg["model_type"] == "mega"
    assert cfg["transformers_version"] == "4.41.2"
    assert meta["class"] == cfg["architectures"][0]
    expected = expected_shapes(cfg)
    if "key_renames" in meta:
        expected = {renamed(k, meta["key_renames"]): s for k, s in expected.items()}
    assert checkpoint_shapes(name) == expected
    with safe_open(str(FIXTURES / name / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_old_key_names_case_is_a_renamed_copy():
    (name,) = [n for n in CASES if "key_renames" in load_case(n)[1]]
    meta = load_case(name)[1]
    source = meta["renamed_from"]
    old, new = (load_file(str(FIXTURES / n / "model.safetensors")) for n in (name, source))
    assert any(".encoders." in k for k in old) and any(".move." in k for k in old)
    assert not any(".layers." in k or ".ema_gate." in k for k in old)
    assert {renamed(k, meta["key_renames"]): v for k, v in new.items()}.keys() == old.keys()
    for key, value in new.items():
        assert torch.equal(old[renamed(key, meta["key_renames"])], value)
    assert (FIXTURES / name / "io.safetensors").read_bytes() == (
        FIXTURES / source / "io.safetensors"
    ).read_bytes()


def test_parameters_are_perturbed_away_from_hf_init():
    state = load_file(str(FIXTURES / "model_base" / "model.safetensors"))
    for key, value in state.items():
        if key.endswith("_float_tensor"):
            continue
        # HF's init has zero biases and qk_bias, unit norm scales, a zero padding row.
        assert not torch.all(value == 0), key
        assert not torch.all(value == 1), key
    assert state["embedding_layer.word_embeddings.weight"][1].abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in CASES if load_case(n)[1]["outputs"]])
def test_io_holds_inputs_outputs_and_valid_masks(name):
    _, meta = load_case(name)
    io = load_file(str(FIXTURES / name / "io.safetensors"))
    assert set(meta["inputs"]) <= INPUT_NAMES
    expected = set(meta["inputs"])
    for out, entry in meta["outputs"].items():
        expected |= {f"f32.{out}", f"f64.{out}"}
        assert list(io[f"f64.{out}"].shape) == entry["shape"]
        assert io[f"f32.{out}"].dtype == torch.float32 and io[f"f64.{out}"].dtype == torch.float64
        if entry["valid"] is not None:
            valid = io[entry["valid"]]
            expected.add(entry["valid"])
            assert valid.dtype == torch.bool
            assert tuple(valid.shape) == tuple(entry["shape"][: valid.dim()])
            assert valid.any() and not valid.all()
    assert set(io) == expected
    mask = io["attention_mask"]
    assert set(mask.unique().tolist()) <= {0, 1}
    assert io["input_ids"].shape == mask.shape
    if meta["padding"] is None:
        assert bool(mask.all())


@pytest.mark.parametrize("name", [n for n in CASES if load_case(n)[1]["outputs"]])
def test_float32_and_float64_outputs_agree(name):
    _, meta = load_case(name)
    io = load_file(str(FIXTURES / name / "io.safetensors"))
    for out, entry in meta["outputs"].items():
        a, b = io[f"f32.{out}"].double(), io[f"f64.{out}"]
        if entry["valid"] is not None:
            valid = io[entry["valid"]]
            a, b = a[valid], b[valid]
        assert torch.isfinite(b).all(), out
        rel = float((a - b).abs().max() / b.abs().max())
        assert rel < 1e-4, f"{name} {out}: f32 vs f64 relative difference {rel:.2e}"
        assert b.abs().max() > 1e-3, f"{name} {out} is (nearly) all zeros"


@pytest.mark.parametrize(
    "name", [n for n in CASES if "cached_logits" in load_case(n)[1]["outputs"]]
)
def test_cached_decoding_equals_full_forward_in_float64(name):
    _, meta = load_case(name)
    io = load_file(str(FIXTURES / name / "io.safetensors"))
    cached, full = io["f64.cached_logits"], io["f64.logits"]
    valid = io.get("valid.cached_logits")
    if valid is not None:
        cached, full = cached[valid], full[valid]
    assert float((cached - full).abs().max() / full.abs().max()) < 1e-10


# ---------------------------------------------------------------------------------------------
# tools.hf_reference.envs, with a stand-in build (the real env is never built here)
# ---------------------------------------------------------------------------------------------
def fake_build(calls: list):
    def build(path: Path) -> None:
        calls.append(path)
        time.sleep(0.3)  # long enough for a second caller to arrive while the lock is held
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("")
        (path / hf_reference.STAMP_NAME).write_text(json.dumps(hf_reference._stamp_content()))

    return build


def test_ensure_env_builds_once_under_concurrent_callers(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(hf_reference, "_build", fake_build(calls))
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(hf_reference.ensure_env(tmp_path)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / ".cache" / hf_reference.ENV_NAME / "bin" / "python"] * 3


def test_ensure_env_distrusts_an_env_without_a_matching_stamp(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(hf_reference, "_build", lambda path: calls.append(path))
    env = hf_reference.env_dir(tmp_path)
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text("")
    hf_reference.ensure_env(tmp_path)  # no stamp: an interrupted build
    (env / hf_reference.STAMP_NAME).write_text(json.dumps({"transformers": "4.40.0"}))
    hf_reference.ensure_env(tmp_path)  # stamp from other pins
    assert calls == [env, env]
    (env / hf_reference.STAMP_NAME).write_text(json.dumps(hf_reference._stamp_content()))
    assert hf_reference.ensure_env(tmp_path) == env / "bin" / "python"
    assert len(calls) == 2


def test_base_python_is_outside_any_virtual_env():
    python = Path(hf_reference.base_python())
    assert python.is_file()
    if sys.prefix != sys.base_prefix:  # running inside a venv, e.g. the project's .venv
        assert not python.resolve().is_relative_to(Path(sys.prefix).resolve())


def test_run_reference_names_the_available_scripts_for_an_unknown_one(tmp_path):
    with pytest.raises(hf_reference.HFReferenceError) as err:
        hf_reference.run_reference(["no_such_script.py"])
    for script in ("generate_fixtures.py", "run_model.py", "bench_model.py"):
        assert script in str(err.value)


def test_build_failure_reports_the_step_output_and_how_to_retry(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_reference, "base_python", lambda: sys.executable)
    # A pip install that fails at once: an option pip does not know.
    monkeypatch.setattr(hf_reference, "TORCH_REQUIREMENT", "--no-such-pip-option")
    monkeypatch.setattr(hf_reference, "_stamp_content", lambda: {"test": True})
    with pytest.raises(hf_reference.HFReferenceError) as err:
        hf_reference.ensure_env(tmp_path)
    text = str(err.value)
    assert "--no-such-pip-option" in text and "no such option" in text
    assert "--rebuild" in text
    assert not (hf_reference.env_dir(tmp_path) / hf_reference.STAMP_NAME).exists()


def test_the_transformers_v5_env_is_separate_and_stamped_with_its_own_pins(tmp_path, monkeypatch):
    built: list = []

    def build(path: Path, spec=None) -> None:
        built.append((path, spec))
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("")
        (path / hf_reference.STAMP_NAME).write_text(json.dumps(hf_reference._stamp_content(spec)))

    monkeypatch.setattr(hf_reference, "_build", build)
    v5 = hf_reference.TRANSFORMERS_V5
    python = hf_reference.ensure_env(tmp_path, spec=v5)
    assert (
        python
        == tmp_path
        / ".cache"
        / f"hf-transformers-{hf_reference.TRANSFORMERS_V5_VERSION}"
        / "bin"
        / "python"
    )
    assert built == [(python.parents[1], v5)]
    assert any(r.startswith("transformers==5.") for r in v5.requirements)
    assert v5.torch == hf_reference.TORCH_REQUIREMENT  # the local CPU wheel, installed first
    # the reference env's stamp does not make the v5 env complete, nor the other way round
    assert hf_reference._stamp_content(v5) != hf_reference._stamp_content()
    hf_reference.ensure_env(tmp_path, spec=v5)
    assert len(built) == 1
    hf_reference.ensure_env(tmp_path)
    assert built[1] == (hf_reference.env_dir(tmp_path), None)
