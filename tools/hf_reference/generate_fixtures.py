"""Write the transformers-4.41.2 Mega parity fixtures (runs inside the reference env).

Usage (normally through ``make hf-fixtures`` / ``tools/make_hf_fixtures.py``)::

    <reference-env python> tools/hf_reference/generate_fixtures.py OUT_DIR [--case NAME ...]

For every case: build a tiny random HF model (fixed seed), move every parameter and buffer away
from HF's init, ``save_pretrained(OUT_DIR/<case>, safe_serialization=True)``, reload it with
``from_pretrained`` and run it in eval mode in float32 (plain HF) and float64 (HF plus the two
float64 patches of ``hf_common.float64_reference``). Writes per case ``config.json`` and
``model.safetensors`` (as save_pretrained wrote them), ``io.safetensors`` (inputs, ``f32.*`` and
``f64.*`` outputs, ``valid.*`` comparison masks) and ``meta.json``. The file format is described
in ``tests/hf/fixtures/README.md``. Deterministic: the same command writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import hf_common as hc
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import MegaConfig

FORMAT_VERSION = 1
# Max relative difference (max |f32 - f64| / max |f64| over valid entries) accepted per output.
F32_F64_RTOL = 1e-4
# Cached decoding must equal the full forward this closely in float64 where HF is correct.
CACHE_RTOL = 1e-10

# A small model; each case overrides what it covers.
TINY = dict(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=24,
    ema_projection_size=4,
    shared_representation_size=8,
    nffn_hidden_size=24,
    max_positions=64,
)
# The shapes used in hf_mega.md section 3.
SECTION3 = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=48,
    ema_projection_size=4,
    shared_representation_size=16,
    nffn_hidden_size=40,
    max_positions=64,
)
DECODER = dict(is_decoder=True, bidirectional=False)


@dataclass
class Case:
    name: str
    cls: str
    description: str
    covers: list[str]
    config: dict
    batch: int = 2
    seq_len: int = 12
    lengths: list[int] | None = None  # real tokens per row (None: no padding)
    padding: str = "right"  # or "left"
    token_types: bool = False  # pass token_type_ids
    labels: str | None = None  # mlm, clm, single, multi, regression, token, choice, span
    num_choices: int = 0
    prompt_len: int | None = None  # record cached decoding (prompt + one token per call)
    hf_bugs: dict[str, str] = field(default_factory=dict)
    observe: list[str] = field(default_factory=list)  # extra HF behaviours to record
    seed: int = 0


CASES: list[Case] = [
    Case(
        "model_base",
        "MegaModel",
        "hf_mega.md section 3 shapes with HF defaults (bidirectional, rotary, scalenorm, softmax, "
        "pre-norm, NFFN); token types passed; right padding; pooler; all hidden states",
        ["bidirectional", "rotary", "scalenorm", "softmax", "token_types", "right_padding"],
        dict(SECTION3, add_token_type_embeddings=True),
        batch=3,
        seq_len=12,
        lengths=[12, 9, 5],
        token_types=True,
        observe=["stale_ema_cache"],
    ),
    Case(
        "model_left_padding_layernorm_laplace",
        "MegaModel",
        "encoder with left padding: layernorm, laplace element attention, gelu; token-type "
        "embeddings on but no token_type_ids passed (HF's zero buffer)",
        ["left_padding", "layernorm", "laplace", "gelu", "token_types_default"],
        dict(
            TINY,
            normalization_type="layernorm",
            attention_activation="laplace",
            activation="gelu",
            add_token_type_embeddings=True,
        ),
        batch=3,
        seq_len=10,
        lengths=[10, 7, 4],
        padding="left",
    ),
    Case(
        "model_chunked_softmax",
        "MegaModel",
        "Mega-chunk: chunk_size 8, length 32 (4 chunks); row 3 has fully padded chunks (HF leaves "
        "those unmasked); softmax, rotary, scalenorm",
        ["use_chunking", "chunk_multiple", "all_padding_chunk", "softmax", "rotary"],
        dict(TINY, use_chunking=True, chunk_size=8),
        batch=3,
        seq_len=32,
        lengths=[32, 21, 7],
    ),
    Case(
        "model_chunked_simple_relu2",
        "MegaModel",
        "chunked (chunk_size 6, length 24) with the simple relative bias (indexed around "
        "chunk_size) and relu2 element attention, layernorm, NFFN post-norm",
        ["use_chunking", "simple_bias", "relu2", "layernorm", "ffn_postnorm"],
        dict(
            TINY,
            use_chunking=True,
            chunk_size=6,
            relative_positional_bias="simple",
            attention_activation="relu2",
            normalization_type="layernorm",
            normalize_before_ffn=False,
        ),
        seq_len=24,
        lengths=[24, 15],
    ),
    Case(
        "model_single_chunk",
        "MegaModel",
        "use_chunking with the sequence shorter than chunk_size (one chunk of length 10 < 16), "
        "laplace",
        ["use_chunking", "seq_shorter_than_chunk", "laplace"],
        dict(TINY, use_chunking=True, chunk_size=16, attention_activation="laplace"),
        seq_len=10,
        lengths=[10, 6],
    ),
    Case(
        "model_truncation_batchnorm_postnorm",
        "MegaModel",
        "EMA kernel truncated to 5 < length 16; batchnorm (perturbed running stats); post-norm "
        "for both sub-layers; relu",
        ["truncation", "batchnorm", "mega_postnorm", "ffn_postnorm", "relu"],
        dict(
            TINY,
            truncation=5,
            normalization_type="batchnorm",
            normalize_before_mega=False,
            normalize_before_ffn=False,
            activation="relu",
        ),
        seq_len=16,
        lengths=[16, 11],
    ),
    Case(
        "model_rmsnorm_hf_bug",
        "MegaModel",
        "rmsnorm: HF's MegaRMSNorm returns x * weight without normalising (hf_mega.md 8.2); "
        "outputs are HF's, to be matched only by the HF-compatible rmsnorm",
        ["rmsnorm", "hf_bug_rmsnorm"],
        dict(TINY, normalization_type="rmsnorm"),
        seq_len=10,
        lengths=[10, 8],
        hf_bugs={"8.2": "MegaRMSNorm does not normalise: output = input * weight"},
        observe=["rmsnorm_identity"],
    ),
    Case(
        "model_no_nffn_simple_postnorm",
        "MegaModel",
        "no NFFN (use_normalized_ffn false); attention post-norm with scalenorm and "
        "norm_affine false; simple bias with chunk_size -1 (indexed around max_positions=20); "
        "linear activation",
        ["no_nffn", "mega_postnorm", "norm_affine_false", "simple_bias", "linear_activation"],
        dict(
            TINY,
            use_normalized_ffn=False,
            normalize_before_mega=False,
            norm_affine=False,
            relative_positional_bias="simple",
            max_positions=20,
            activation="linear",
        ),
        seq_len=14,
        lengths=[14, 9],
    ),
    Case(
        "model_unidirectional_simple_chunk_cap",
        "MegaModel",
        "unidirectional EMA in an encoder (no causal mask); simple bias with use_chunking false "
        "but chunk_size 16 >= 0, so HF indexes the bias around chunk_size-1 (hf_mega.md 8.7)",
        ["unidirectional_encoder", "simple_bias", "simple_bias_chunk_cap"],
        dict(TINY, bidirectional=False, relative_positional_bias="simple", chunk_size=16),
        seq_len=12,
        lengths=[12, 7],
        hf_bugs={"8.7": "simple bias capped/indexed by chunk_size although use_chunking=false"},
        observe=["simple_bias_cap"],
    ),
    Case(
        "model_rotary_extrapolation",
        "MegaModel",
        "rotary bias past max_positions (8 < length 20); gelu_accurate; no padding",
        ["rotary_extrapolation", "gelu_accurate", "no_padding"],
        dict(TINY, max_positions=8, activation="gelu_accurate"),
        seq_len=20,
    ),
    Case(
        "masked_lm",
        "MegaForMaskedLM",
        "masked LM with the hidden dense+tanh layer, tied head, token types passed, right "
        "padding, MLM labels (-100 off the masked positions)",
        ["masked_lm", "lm_dense_layer", "tied_head", "token_types", "loss"],
        dict(TINY, add_token_type_embeddings=True),
        batch=3,
        seq_len=14,
        lengths=[14, 10, 14],
        token_types=True,
        labels="mlm",
    ),
    Case(
        "masked_lm_wikitext_like_untied",
        "MegaForMaskedLM",
        "masked LM shaped like mnaylor/mega-base-wikitext (no dense layer, no token types, "
        "nffn_activation_dropout_prob 0) but with tie_word_embeddings false; left padding",
        ["masked_lm", "no_lm_dense_layer", "untied_head", "left_padding", "loss"],
        dict(
            TINY,
            add_lm_hidden_dense_layer=False,
            nffn_activation_dropout_prob=0.0,
            tie_word_embeddings=False,
        ),
        seq_len=12,
        lengths=[12, 8],
        padding="left",
        labels="mlm",
    ),
    Case(
        "causal_lm_cached",
        "MegaForCausalLM",
        "decoder (is_decoder, unidirectional), softmax, rotary, scalenorm, dense layer; right "
        "padding; full-forward logits (use_cache=False), LM loss, and cached decoding (prompt "
        "of 5, then one token per call), which HF gets right here",
        ["causal_lm", "decoder", "softmax", "rotary", "cached_decoding", "right_padding", "loss"],
        dict(TINY, **DECODER),
        seq_len=16,
        lengths=[16, 11],
        labels="clm",
        prompt_len=5,
        observe=["left_padding_nan"],
    ),
    Case(
        "causal_lm_cached_layernorm_simple",
        "MegaForCausalLM",
        "decoder shaped like BEE-spoke-data/mega-ar-126m-4k (layernorm, no dense layer, "
        "pad_token_id null) with the simple bias and token types; cached decoding (prompt of 3)",
        ["causal_lm", "layernorm", "simple_bias", "no_lm_dense_layer", "pad_token_none"],
        dict(
            TINY,
            **DECODER,
            normalization_type="layernorm",
            relative_positional_bias="simple",
            add_lm_hidden_dense_layer=False,
            add_token_type_embeddings=True,
            max_positions=32,
            pad_token_id=None,
            eos_token_id=0,
        ),
        seq_len=12,
        token_types=True,
        labels="clm",
        prompt_len=3,
    ),
    Case(
        "causal_lm_laplace",
        "MegaForCausalLM",
        "decoder with laplace element attention (causal lengths i+1); full forward only: HF's "
        "cached decoding is wrong here (hf_mega.md 8.3), its divergence is recorded in meta",
        ["causal_lm", "laplace", "hf_bug_element_cache"],
        dict(TINY, **DECODER, attention_activation="laplace"),
        seq_len=12,
        labels="clm",
        hf_bugs={"8.3": "element attention with the cache uses length 1, not i+1"},
        observe=["cache_divergence"],
    ),
    Case(
        "causal_lm_chunked_relu2",
        "MegaForCausalLM",
        "chunked decoder (chunk_size 6, length 18: each chunk causal on its own), relu2; right "
        "padding; full forward only (HF's chunked cached decoding crashes, hf_mega.md 8.1)",
        ["causal_lm", "use_chunking", "relu2", "right_padding", "loss"],
        dict(TINY, **DECODER, use_chunking=True, chunk_size=6, attention_activation="relu2"),
        seq_len=18,
        lengths=[18, 13],
        labels="clm",
        hf_bugs={"8.1": "chunked decoder: L < chunk_size and cached decoding fail"},
        observe=["chunked_decoder_limits"],
    ),
    Case(
        "causal_lm_truncation",
        "MegaForCausalLM",
        "decoder with truncation 4 < length 12: logits with use_cache=False (truncated kernel); "
        "also HF's default use_cache=True logits, which ignore truncation (hf_mega.md 8.5)",
        ["causal_lm", "truncation", "hf_bug_truncation_cache"],
        dict(TINY, **DECODER, truncation=4),
        seq_len=12,
        hf_bugs={"8.5": "truncation is skipped on the use_cache path"},
        observe=["use_cache_true_logits"],
    ),
    Case(
        "seq_cls_single_label",
        "MegaForSequenceClassification",
        "sequence classification, 3 labels, problem_type inferred (single_label_classification "
        "from integer labels); right padding",
        ["sequence_classification", "single_label", "loss"],
        dict(TINY, num_labels=3),
        batch=3,
        seq_len=10,
        lengths=[10, 6, 8],
        labels="single",
    ),
    Case(
        "seq_cls_multi_label",
        "MegaForSequenceClassification",
        "sequence classification, problem_type multi_label_classification, 4 labels "
        "(BCE-with-logits on float labels); laplace",
        ["sequence_classification", "multi_label", "laplace", "loss"],
        dict(
            TINY,
            num_labels=4,
            problem_type="multi_label_classification",
            attention_activation="laplace",
        ),
        seq_len=10,
        lengths=[10, 7],
        labels="multi",
    ),
    Case(
        "seq_cls_regression",
        "MegaForSequenceClassification",
        "sequence classification with num_labels 1: regression (MSE) inferred; batchnorm; "
        "attention post-norm with NFFN pre-norm",
        ["sequence_classification", "regression", "batchnorm", "mega_postnorm", "loss"],
        dict(TINY, num_labels=1, normalization_type="batchnorm", normalize_before_mega=False),
        seq_len=10,
        lengths=[10, 8],
        labels="regression",
    ),
    Case(
        "multiple_choice",
        "MegaForMultipleChoice",
        "multiple choice, 3 choices (inputs (B, 3, L)), pooler, token types passed, right "
        "padding per choice, labels",
        ["multiple_choice", "pooler", "token_types", "right_padding", "loss"],
        dict(TINY, add_token_type_embeddings=True),
        seq_len=10,
        lengths=[10, 7, 9, 5, 10, 8],
        token_types=True,
        labels="choice",
        num_choices=3,
    ),
    Case(
        "token_cls_unidirectional",
        "MegaForTokenClassification",
        "token classification, 5 labels, unidirectional EMA encoder; right padding; labels "
        "-100 on padding",
        ["token_classification", "unidirectional_encoder", "right_padding", "loss"],
        dict(TINY, num_labels=5, bidirectional=False),
        batch=3,
        seq_len=12,
        lengths=[12, 9, 4],
        labels="token",
    ),
    Case(
        "question_answering_chunked",
        "MegaForQuestionAnswering",
        "extractive QA (start/end logits, span loss) on a chunked model (chunk_size 8, length "
        "16), no padding, relu activation",
        ["question_answering", "use_chunking", "loss"],
        dict(TINY, use_chunking=True, chunk_size=8, activation="relu"),
        seq_len=16,
        labels="span",
    ),
]

OLD_KEYS_CASE = "masked_lm_old_key_names"
OLD_KEYS_SOURCE = "masked_lm"
CROSS_ATTENTION_CASE = "cross_attention_refuse"


# ---------------------------------------------------------------------------------------------
# model and inputs
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and float buffer away from HF's init (noise N(0, 0.2-0.5)).

    Norm scales and BatchNorm running_var stay positive-ish (1 + noise, exp(noise)); the rotary
    `_float_tensor` buffer (a dtype carrier, value 0) and integer buffers are left alone.
    """

    def noise(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=t.dtype) * std

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("damping_factor", "decay_factor"):
            p.add_(noise(p, 0.5))
        elif leaf in ("qk_weight", "qk_bias", "alpha", "b_param", "rel_pos_bias") or (
            "embeddings" in name
        ):
            p.add_(noise(p, 0.3))
        else:  # linear weights/biases, EMA beta/gamma/omega, norm scales and biases
            p.add_(noise(p, 0.2))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.add_(noise(b, 0.2))
        elif name.endswith("running_var"):
            b.mul_(torch.exp(noise(b, 0.3)))


def make_model(case: Case, folder: Path) -> MegaConfig:
    torch.manual_seed(1000 + case.seed)
    config = MegaConfig(**case.config)
    model = getattr(transformers, case.cls)(config)
    perturb(model, torch.Generator().manual_seed(2000 + case.seed))
    model.save_pretrained(str(folder), safe_serialization=True)
    return config


def make_inputs(case: Case, config: MegaConfig) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3000 + case.seed)
    rows = case.batch * max(case.num_choices, 1)
    length = case.seq_len
    ids = torch.randint(3, config.vocab_size, (rows, length), generator=gen)
    mask = torch.ones(rows, length, dtype=torch.long)
    if case.lengths is not None:
        if len(case.lengths) != rows:
            raise ValueError(f"{case.name}: {len(case.lengths)} lengths for {rows} rows")
        for r, n in enumerate(case.lengths):
            pad = slice(n, None) if case.padding == "right" else slice(0, length - n)
            mask[r, pad] = 0
        ids[mask == 0] = config.pad_token_id
    inputs = {"input_ids": ids, "attention_mask": mask}
    if case.token_types:
        split = torch.randint(2, length - 1, (rows, 1), generator=gen)
        inputs["token_type_ids"] = (torch.arange(length) >= split).long() * mask
    real = mask.bool()
    if case.labels in ("mlm", "clm", "token"):
        if case.labels == "token":
            labels = torch.randint(0, config.num_labels, (rows, length), generator=gen)
        else:
            labels = ids.clone()
        keep = real.clone()
        if case.labels == "mlm":
            keep &= torch.rand(rows, length, generator=gen) < 0.4
        inputs["labels"] = torch.where(keep, labels, torch.full_like(labels, -100))
    elif case.labels == "single":
        inputs["labels"] = torch.randint(0, config.num_labels, (rows,), generator=gen)
    elif case.labels == "multi":
        inputs["labels"] = (
            torch.rand(rows, config.num_labels, generator=gen, dtype=torch.float64) < 0.5
        ).double()
    elif case.labels == "regression":
        inputs["labels"] = torch.randn(rows, generator=gen, dtype=torch.float64)
    elif case.labels == "choice":
        inputs["labels"] = torch.randint(0, case.num_choices, (case.batch,), generator=gen)
    elif case.labels == "span":
        starts = torch.randint(0, length // 2, (rows,), generator=gen)
        ends = starts + torch.randint(0, length // 2, (rows,), generator=gen)
        inputs["start_positions"], inputs["end_positions"] = starts, ends
    elif case.labels is not None:
        raise ValueError(case.labels)
    if case.num_choices:
        inputs = {
            k: (v.view(case.batch, case.num_choices, length) if v.dim() == 2 else v)
            for k, v in inputs.items()
        }
    return inputs


def valid_mask(name: str, shape: torch.Size, case: Case, mask: torch.Tensor) -> torch.Tensor | None:
    """Which entries of an output are comparable: those computed at real (non-pad) tokens.

    Returns a bool mask over the output's leading dims, or None when everything is comparable.
    Token-level outputs: (rows, L) = the attention mask (multiple choice: flattened to
    (B * choices, L), as HF flattens it). Token-0 outputs (pooler, sequence classification,
    multiple choice logits): whether token 0 of the row is real. Losses: always comparable here,
    since labels are -100 on padding (and the QA case has no padding).
    """
    flat = mask.reshape(-1, mask.size(-1)).bool()  # (rows, L)
    if bool(flat.all()) or name == "loss":
        return None
    base = name.split(".")[0]
    token_heads = ("MegaForMaskedLM", "MegaForCausalLM", "MegaForTokenClassification")
    if base in (
        "last_hidden_state",
        "hidden_states",
        "start_logits",
        "end_logits",
        "cached_logits",
        "logits_use_cache_true",
    ) or (base == "logits" and case.cls in token_heads):
        valid = flat
    elif base == "pooler_output" or (
        base == "logits" and case.cls == "MegaForSequenceClassification"
    ):
        valid = flat[:, 0]
    elif base == "logits" and case.cls == "MegaForMultipleChoice":
        valid = flat[:, 0].view(case.batch, case.num_choices)
    else:
        raise ValueError(f"{case.name}: no comparison rule for output {name} {tuple(shape)}")
    if tuple(valid.shape) != tuple(shape[: valid.dim()]):
        raise AssertionError(f"{case.name}: valid mask {tuple(valid.shape)} vs {name} {shape}")
    return None if bool(valid.all()) else valid


def rel_diff(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None) -> float:
    a, b = a.double(), b.double()
    if valid is not None:
        a, b = a[valid], b[valid]
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------
# one case
# ---------------------------------------------------------------------------------------------
def run_case(case: Case, out_dir: Path) -> dict:
    folder = out_dir / case.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    config = make_model(case, folder)
    inputs = make_inputs(case, config)
    mask = inputs["attention_mask"]
    results: dict[str, dict[str, torch.Tensor]] = {}
    checks = {}
    for dtype in (torch.float32, torch.float64):
        prefix = hc.PREFIX[dtype]
        model = hc.load_model(folder, dtype)
        kwargs = hc.model_inputs(inputs, dtype)
        ctx = hc.float64_reference(model) if dtype == torch.float64 else nullcontext()
        with ctx as check:
            outs = {k.split(".", 1)[1]: v for k, v in hc.forward_outputs(model, kwargs).items()}
            if case.prompt_len:
                outs["cached_logits"] = hc.cached_decode(model, kwargs, case.prompt_len)
            if "use_cache_true_logits" in case.observe:
                no_labels = {k: v for k, v in kwargs.items() if k != "labels"}
                outs["logits_use_cache_true"] = hc.forward_outputs(
                    model, no_labels, hidden_states=False, use_cache=True
                )[f"{prefix}.logits"]
        if dtype == torch.float64:
            if check.fft_calls == 0:
                raise AssertionError(f"{case.name}: the patched FFT was never called")
            checks = {
                "patched_fft_calls": check.fft_calls,
                "patched_sinusoid_calls": check.sinusoid_calls,
                "torch_ops_checked": check.ops_checked,
                "exact_integer_float32_tensors_seen": check.integer_float32,
            }
        results[prefix] = outs

    meta_outputs = {}
    tensors: dict[str, torch.Tensor] = {k: v.contiguous() for k, v in inputs.items()}
    for name, ref in results["f64"].items():
        if not torch.isfinite(ref).all():
            raise AssertionError(f"{case.name}: non-finite values in f64.{name}")
        valid = valid_mask(name, ref.shape, case, mask)
        diff = rel_diff(results["f32"][name], ref, valid)
        if diff > F32_F64_RTOL:
            raise AssertionError(f"{case.name}: f32 vs f64 {name} differ by {diff:.2e}")
        entry = {
            "shape": list(ref.shape),
            "valid": f"valid.{name}" if valid is not None else None,
            "f32_vs_f64_max_rel_diff": float(f"{diff:.3g}"),
        }
        if name == "cached_logits":
            entry["how"] = (
                f"prompt of {case.prompt_len} tokens in one call (use_cache=True), then one token "
                "per call with the attention mask up to that token"
            )
            cache_diff = rel_diff(ref, results["f64"]["logits"], valid)
            if cache_diff > CACHE_RTOL:
                raise AssertionError(f"{case.name}: HF cached vs full differ by {cache_diff:.2e}")
            entry["f64_vs_full_forward_max_rel_diff"] = float(f"{cache_diff:.3g}")
        elif name == "logits_use_cache_true":
            entry["how"] = (
                "full forward with HF's default use_cache=True (HF bug 8.5: no truncation)"
            )
            entry["hf_bug"] = True
            entry["f64_vs_logits_max_abs_diff"] = float(
                f"{float((ref - results['f64']['logits']).abs().max()):.3g}"
            )
        elif case.cls == "MegaForCausalLM" or config.is_decoder:
            entry["how"] = "full forward, use_cache=False"
        meta_outputs[name] = entry
        for prefix in ("f32", "f64"):
            tensors[f"{prefix}.{name}"] = results[prefix][name].contiguous()
        if valid is not None:
            tensors[f"valid.{name}"] = valid.contiguous()
    save_file(tensors, str(folder / "io.safetensors"), metadata={"format": "pt"})

    meta = {
        "format_version": FORMAT_VERSION,
        "case": case.name,
        "class": case.cls,
        "description": case.description,
        "covers": case.covers,
        "hf_bugs": case.hf_bugs,
        "inputs": sorted(inputs),
        "forward": {
            "mode": "eval",
            "output_hidden_states": True,
            "use_cache": False if config.is_decoder else None,
        },
        "padding": None if case.lengths is None else case.padding,
        "outputs": meta_outputs,
        "float64_checks": checks,
        "generated_with": {**hc.versions(), "seed": case.seed},
    }
    if observed := observe(case, folder, inputs):
        meta["observed"] = observed
    write_json(folder / "meta.json", meta)
    return meta


def _error(fn) -> str:
    try:
        fn()
    except Exception as err:  # recorded, not raised: these document HF failures
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return "no error"


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(f"{float((a - b).abs().max()):.3g}")


@torch.no_grad()
def observe(case: Case, folder: Path, inputs: dict[str, torch.Tensor]) -> dict:
    """Probe HF behaviours listed in hf_mega.md section 8 (float32, fresh model each time).

    The results go into meta.json ("observed"); they are documentation, not fixture outputs.
    """
    kwargs = hc.model_inputs(inputs, torch.float32)
    ids = kwargs["input_ids"]
    obs: dict[str, object] = {}
    for what in case.observe:
        model = hc.load_model(folder, torch.float32)
        if what == "cache_divergence":
            full = model(**kwargs, use_cache=False).logits
            cached = hc.cached_decode(model, kwargs, 1)
            obs["hf_8.3_cached_vs_full_logits_max_abs_diff"] = _max_abs(cached, full)
        elif what == "rmsnorm_identity":
            norm = next(m for m in model.modules() if type(m).__name__ == "MegaRMSNorm")
            x = torch.randn(5, 3, norm.num_features, generator=torch.Generator().manual_seed(0))
            y = norm(x)
            true = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
            obs["hf_8.2_rmsnorm_output_minus_input_times_weight_max_abs"] = _max_abs(
                y, x * norm.weight
            )
            obs["hf_8.2_rmsnorm_output_minus_true_rmsnorm_max_abs"] = _max_abs(y, true)
        elif what == "simple_bias_cap":
            n = model.config.chunk_size + 1
            long_ids = torch.full((1, n), 5, dtype=torch.long)
            obs[f"hf_8.7_length_{n}_with_chunk_size_{n - 1}_use_chunking_false"] = _error(
                lambda m=model, x=long_ids: m(x)
            )
        elif what == "chunked_decoder_limits":
            c = model.config.chunk_size
            obs[f"hf_8.1_full_forward_length_{c - 2}_below_chunk_size_{c}"] = _error(
                lambda m=model, n=c - 2: m(ids[:, :n], use_cache=False)
            )
            obs[f"hf_8.1_full_forward_length_{c + 2}_not_a_multiple"] = _error(
                lambda m=model, n=c + 2: m(ids[:, :n], use_cache=False)
            )
            obs[f"hf_8.1_cached_decoding_prompt_{c}_then_steps"] = _error(
                lambda m=model, n=c: hc.cached_decode(m, {"input_ids": ids}, n)
            )
        elif what == "left_padding_nan":
            mask = torch.ones_like(ids)
            mask[-1, :3] = 0
            logits = model(ids, attention_mask=mask, use_cache=False).logits
            obs["hf_8.4_decoder_left_padding_rows_with_nan_logits"] = [
                bool(torch.isnan(row).any()) for row in logits
            ]
        elif what == "stale_ema_cache":
            model(**kwargs)  # eval mode: caches the EMA kernel
            state = {k: v * 1.1 for k, v in model.state_dict().items()}
            model.load_state_dict(state)
            stale = model(**kwargs).last_hidden_state
            fresh = hc.load_model(folder, torch.float32)
            fresh.load_state_dict(state)
            obs["hf_8.6_stale_vs_fresh_after_load_state_dict_max_abs"] = _max_abs(
                stale, fresh(**kwargs).last_hidden_state
            )
        elif what != "use_cache_true_logits":
            raise ValueError(f"unknown observation {what}")
    return obs


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# derived cases
# ---------------------------------------------------------------------------------------------
def old_key_names(out_dir: Path) -> dict:
    """A copy of `masked_lm` saved with the pre-release key names (encoders., move.)."""
    src, folder = out_dir / OLD_KEYS_SOURCE, out_dir / OLD_KEYS_CASE
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    state = load_file(str(src / "model.safetensors"))
    renamed = {}
    for key, value in state.items():
        new = key.replace(".layers.", ".encoders.").replace(".ema_gate.", ".move.")
        renamed[new] = value
    if len(renamed) != len(state) or renamed.keys() == state.keys():
        raise AssertionError("old-key renaming did nothing or collided")
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(src / "config.json", folder / "config.json")
    shutil.copyfile(src / "io.safetensors", folder / "io.safetensors")
    meta = json.loads((src / "meta.json").read_text())
    meta.update(
        case=OLD_KEYS_CASE,
        description=(
            f"the {OLD_KEYS_SOURCE} checkpoint with its keys renamed to the pre-release names "
            "(`mega.encoders.N.` for `mega.layers.N.`, `.move.` for `.ema_gate.`), as old Hub "
            "revisions have them; same config, inputs and outputs as "
            f"{OLD_KEYS_SOURCE}. transformers itself does not load it"
        ),
        covers=["old_key_names", *meta["covers"]],
        renamed_from=OLD_KEYS_SOURCE,
        key_renames={".layers.": ".encoders.", ".ema_gate.": ".move."},
    )
    write_json(folder / "meta.json", meta)
    return meta


def cross_attention(out_dir: Path) -> dict:
    folder = out_dir / CROSS_ATTENTION_CASE
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    torch.manual_seed(1000)
    config = MegaConfig(**TINY, **DECODER, add_cross_attention=True)
    model = transformers.MegaModel(config)
    perturb(model, torch.Generator().manual_seed(2000))
    model.save_pretrained(str(folder), safe_serialization=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "case": CROSS_ATTENTION_CASE,
        "class": "MegaModel",
        "description": (
            "decoder with add_cross_attention=true (config and weights only, with the "
            "layers.N.cross_attn.* keys): cross-attention is out of scope, our loader must refuse "
            "it with a clear message"
        ),
        "covers": ["add_cross_attention", "refuse"],
        "hf_bugs": {},
        "expect": "refuse",
        "inputs": [],
        "outputs": {},
        "generated_with": {**hc.versions(), "seed": 0},
    }
    write_json(folder / "meta.json", meta)
    return meta


def checker_self_test(out_dir: Path) -> None:
    """Show that the float64 checks catch HF's float32 casts when the patches are off."""
    model = hc.load_model(out_dir / "model_base", torch.float64)
    kwargs = hc.model_inputs(
        load_file(str(out_dir / "model_base" / "io.safetensors")), torch.float64
    )
    try:
        with hc.float64_reference(model, patch=False):
            hc.forward_outputs(model, kwargs)
    except AssertionError as err:
        text = str(err)
        if "fft" not in text or "float32" not in text:
            raise AssertionError(f"unpatched check flagged something unexpected:\n{text}") from err
        print("  float64 check self-test: without the patches it flags", file=sys.stderr)
        for line in text.splitlines()[1:]:
            print(f"    {line.strip()}", file=sys.stderr)
        return
    raise AssertionError("the float64 check did not notice HF's float32 casts without the patches")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--case", action="append", help="only these cases (default: all)")
    ns = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    names = {c.name for c in CASES} | {OLD_KEYS_CASE, CROSS_ATTENTION_CASE}
    wanted = set(ns.case or names)
    if unknown := wanted - names:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {sorted(names)}")
    if OLD_KEYS_CASE in wanted:
        wanted.add(OLD_KEYS_SOURCE)
    for case in CASES:
        if case.name in wanted:
            meta = run_case(case, ns.out_dir)
            print(f"  {case.name}: {', '.join(meta['outputs'])}", file=sys.stderr)
    if OLD_KEYS_CASE in wanted:
        old_key_names(ns.out_dir)
        print(f"  {OLD_KEYS_CASE}: renamed keys of {OLD_KEYS_SOURCE}", file=sys.stderr)
    if CROSS_ATTENTION_CASE in wanted:
        cross_attention(ns.out_dir)
        print(f"  {CROSS_ATTENTION_CASE}: config + weights only", file=sys.stderr)
    if "model_base" in wanted:
        checker_self_test(ns.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
