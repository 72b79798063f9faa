"""The transformers `PreTrainedModel` / `PretrainedConfig` surface of the Mega family.

Where transformers 4.41.2 defines the behaviour (config diffs and label counts, loading with an
edited `config=`, `torch_dtype="auto"`, `resize_token_embeddings`), the same operations run on
the same checkpoints in the reference env (`tools/hf_reference/api_probe.py`) and our results
are compared with HF's. The rest pins invariants: logits of old tokens survive a resize, sharded
and `.bin` saves load back exactly, nothing is overwritten unasked, errors name what is wrong.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mega_lra
from mega_lra import MegaConfig
from mega_lra.hf.state_dict import CheckpointError
from tests.helpers import perturb_, tiny_config

IDS = torch.tensor([[0, 5, 9, 3, 30, 2], [0, 7, 8, 11, 36, 2]])


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------- against transformers 4.41.2
@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """Checkpoints made here, the API operations of the plan run by transformers 4.41.2."""
    from tools.hf_reference.envs import run_reference

    root = tmp_path_factory.mktemp("hf-api")
    torch.manual_seed(0)
    labels = {0: "neg", 1: "neu", 2: "pos"}
    perturb_(mega_lra.MegaForMaskedLM(tiny_config())).save_pretrained(root / "mlm")
    perturb_(mega_lra.MegaForSequenceClassification(tiny_config(id2label=labels))).save_pretrained(
        root / "seq"
    )
    untied = tiny_config(is_decoder=True, bidirectional=False, tie_word_embeddings=False)
    perturb_(mega_lra.MegaForCausalLM(untied)).save_pretrained(root / "clm_untied")
    perturb_(mega_lra.MegaModel(tiny_config())).half().save_pretrained(root / "half")
    plan = {
        "config": {"op": "config", "path": root / "seq"},
        "config_same_count": {"op": "config", "path": root / "seq", "kwargs": {"num_labels": 3}},
        "config_new_count": {"op": "config", "path": root / "seq", "kwargs": {"num_labels": 5}},
        "config_set_count": {"op": "config", "path": root / "seq", "set": {"num_labels": 4}},
        "decoder_from_encoder": {
            "op": "load",
            "class": "MegaForCausalLM",
            "path": root / "mlm",
            "config_set": {"is_decoder": True, "bidirectional": False},
            "kwargs": {"ignore_mismatched_sizes": True},
        },
        "auto_dtype_half": {
            "op": "load",
            "class": "MegaModel",
            "path": root / "half",
            "kwargs": {"torch_dtype": "auto"},
        },
        "default_dtype_half": {"op": "load", "class": "MegaModel", "path": root / "half"},
        "bfloat16": {
            "op": "load",
            "class": "MegaModel",
            "path": root / "half",
            "kwargs": {"torch_dtype": "bfloat16"},
        },
        "head_into_base": {"op": "load", "class": "MegaModel", "path": root / "mlm"},
        "resize_tied": {
            "op": "resize",
            "class": "MegaForMaskedLM",
            "path": root / "mlm",
            "new_num_tokens": 45,
        },
        "resize_untied_padded": {
            "op": "resize",
            "class": "MegaForCausalLM",
            "path": root / "clm_untied",
            "new_num_tokens": 40,
            "pad_to_multiple_of": 16,
        },
        "shrink_tied": {
            "op": "resize",
            "class": "MegaForMaskedLM",
            "path": root / "mlm",
            "new_num_tokens": 30,
        },
    }
    ops = [{k: str(v) if isinstance(v, Path) else v for k, v in op.items()} for op in plan.values()]
    (root / "plan.json").write_text(json.dumps(ops))
    run_reference(["api_probe.py", root / "plan.json", root / "out"], timeout=600)
    results = json.loads((root / "out" / "results.json").read_text())
    out = {}
    for i, (name, op) in enumerate(plan.items()):
        state_file = root / "out" / f"{i}.safetensors"
        state = load_file(str(state_file)) if state_file.is_file() else None
        out[name] = (op, results[i], state)
    return out


@pytest.mark.parametrize(
    "name,kwargs,set_after",
    [
        ("config", {}, {}),
        ("config_same_count", {"num_labels": 3}, {}),
        ("config_new_count", {"num_labels": 5}, {}),
        ("config_set_count", {}, {"num_labels": 4}),
    ],
)
def test_config_json_and_labels_match_transformers(hf, name, kwargs, set_after):
    op, result, _ = hf[name]
    config = MegaConfig.from_pretrained(op["path"], **kwargs)
    for key, value in set_after.items():
        setattr(config, key, value)
    assert config.num_labels == result["num_labels"]
    assert {str(k): v for k, v in config.id2label.items()} == result["id2label"]
    assert config.label2id == result["label2id"]
    diff = config.to_diff_dict()
    diff.pop("transformers_version", None)
    assert diff == result["to_diff_dict"]  # what config.json holds, key for key
    full = config.to_dict()
    full.pop("transformers_version", None)
    assert {k: result["to_dict"][k] for k in full} == full  # HF has more legacy keys


def _loading_info_matches(ours: dict, theirs: dict) -> None:
    def strip(keys):  # HF names a base model's missing keys with the head prefix
        return sorted(k.removeprefix("mega.") for k in keys)

    assert strip(ours["missing_keys"]) == strip(theirs["missing_keys"])
    assert strip(ours["unexpected_keys"]) == strip(theirs["unexpected_keys"])
    assert strip(k for k, *_ in ours["mismatched_keys"]) == strip(theirs["mismatched_keys"])


def test_decoder_from_encoder_recipe_loads_what_transformers_loads(hf):
    """HF's MegaForCausalLM docstring: an MLM checkpoint, is_decoder + unidirectional EMA."""
    op, result, hf_state = hf["decoder_from_encoder"]
    config = MegaConfig.from_pretrained(op["path"])
    config.is_decoder = True
    config.bidirectional = False
    model, info = _quiet(
        mega_lra.MegaForCausalLM.from_pretrained,
        op["path"],
        config=config,
        ignore_mismatched_sizes=True,
        output_loading_info=True,
    )
    _loading_info_matches(info, result)
    fresh = set(info["missing_keys"]) | {k for k, *_ in info["mismatched_keys"]}
    ours = model.state_dict()
    assert ours.keys() == hf_state.keys()
    for key, value in hf_state.items():
        if key not in fresh:
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
        assert ours[key].shape == value.shape, key
    assert model.lm_head.weight is model.mega.embedding_layer.word_embeddings.weight
    assert model.config.is_decoder and not model.config.bidirectional
    assert model.config is not config  # the caller's config object is copied, not adopted


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("auto_dtype_half", {"torch_dtype": "auto"}),
        ("default_dtype_half", {}),
        ("bfloat16", {"torch_dtype": "bfloat16"}),
        ("head_into_base", {}),
    ],
)
def test_dtype_and_loading_info_match_transformers(hf, name, kwargs):
    op, result, hf_state = hf[name]
    model, info = _quiet(
        mega_lra.MegaModel.from_pretrained, op["path"], output_loading_info=True, **kwargs
    )
    assert str(model.dtype).replace("torch.", "") == result["dtype"]
    _loading_info_matches(info, result)
    for key, value in model.state_dict().items():
        if key not in info["missing_keys"]:
            torch.testing.assert_close(value, hf_state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("name", ["resize_tied", "resize_untied_padded", "shrink_tied"])
def test_resize_matches_transformers_except_the_random_new_rows(hf, name):
    op, result, hf_state = hf[name]
    model = _quiet(getattr(mega_lra, op["class"]).from_pretrained, op["path"])
    old = model.get_input_embeddings().num_embeddings
    embeddings = model.resize_token_embeddings(
        op["new_num_tokens"], op.get("pad_to_multiple_of"), mean_resizing=False
    )
    head = model.get_output_embeddings()
    assert embeddings is model.get_input_embeddings()
    assert model.config.vocab_size == result["vocab_size"] == embeddings.num_embeddings
    assert (head.weight is embeddings.weight) == result["tied"]
    assert head.out_features == result["out_features"]
    ours = model.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in hf_state.items()}
    for key, value in hf_state.items():
        if key.endswith(("word_embeddings.weight", "lm_head.weight", "mlm_head.weight")):
            keep = min(old, value.shape[0])
            torch.testing.assert_close(ours[key][:keep], value[:keep], rtol=0, atol=0)
            new = ours[key][keep:]  # HF's init (4.41, mean_resizing=False): N(0, 0.02)
            if len(new):
                assert 0.01 < float(new.std()) < 0.03 and abs(float(new.mean())) < 0.01
        else:  # everything else, head biases included (new entries are zeros in both)
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


# ------------------------------------------------------------------------ resize
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("mean_resizing", [True, False])
def test_resize_keeps_logits_of_old_tokens(tied, mean_resizing):
    config = tiny_config(is_decoder=True, bidirectional=False, tie_word_embeddings=tied)
    model = perturb_(mega_lra.MegaForCausalLM(config)).eval()
    with torch.no_grad():
        before = model(IDS).logits
        model.resize_token_embeddings(50, mean_resizing=mean_resizing)
        after = model(IDS).logits
    assert after.shape == (2, 6, 50)
    torch.testing.assert_close(after[..., :37], before, rtol=0, atol=0)
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
    assert model.lm_head.bias.shape == (50,) and model.config.vocab_size == 50
    if tied:  # a tied head's bias grows with zeros, as transformers pads it
        assert torch.equal(model.lm_head.bias[37:], torch.zeros(13))
    new_ids = torch.tensor([[0, 45, 49, 2]])  # the new tokens are usable at once
    assert torch.isfinite(model(new_ids).logits).all()


def test_mean_resizing_starts_new_rows_at_the_mean_of_the_old():
    config = tiny_config(tie_word_embeddings=False, is_decoder=True, bidirectional=False)
    model = perturb_(mega_lra.MegaForCausalLM(config)).eval()
    emb = model.get_input_embeddings().weight.detach().clone()
    head_w = model.lm_head.weight.detach().clone()
    head_b = model.lm_head.bias.detach().clone()
    model.resize_token_embeddings(40)
    # new rows = mean + noise of covariance 1e-9 * the rows' covariance (std ~ 3e-5 * theirs)
    for new, old in (
        (model.get_input_embeddings().weight[37:], emb),
        (model.lm_head.weight[37:], head_w),
    ):
        spread = old.std(0).max()
        assert (new - old.mean(0)).abs().max() < 1e-3 * spread
        assert not torch.equal(new[0], new[1])  # sampled, not a copy
    assert (model.lm_head.bias[37:] - head_b.mean()).abs().max() < 1e-3 * head_b.std()


def test_resize_to_the_same_size_or_none_changes_nothing():
    model = perturb_(mega_lra.MegaForMaskedLM(tiny_config()))
    emb = model.get_input_embeddings()
    assert model.resize_token_embeddings() is emb
    assert model.resize_token_embeddings(37) is emb
    assert model.resize_token_embeddings(pad_to_multiple_of=8).num_embeddings == 40
    with pytest.raises(ValueError, match="new_num_tokens=0: expected a positive integer"):
        model.resize_token_embeddings(0)
    with pytest.raises(ValueError, match="pad_to_multiple_of=-2"):
        model.resize_token_embeddings(40, pad_to_multiple_of=-2)


def test_shrinking_below_the_padding_id_drops_padding_idx():
    model = mega_lra.MegaModel(tiny_config(pad_token_id=30))
    model.resize_token_embeddings(20)
    assert model.get_input_embeddings().padding_idx is None
    model = mega_lra.MegaModel(tiny_config(pad_token_id=1))
    model.resize_token_embeddings(20)
    assert model.get_input_embeddings().padding_idx == 1


def test_resized_model_saves_and_loads_with_the_new_vocabulary(tmp_path):
    model = perturb_(mega_lra.MegaForMaskedLM(tiny_config())).eval()
    model.resize_token_embeddings(41)
    model.save_pretrained(tmp_path)
    again = mega_lra.MegaForMaskedLM.from_pretrained(tmp_path)
    assert again.config.vocab_size == 41
    torch.testing.assert_close(again(IDS).logits, model(IDS).logits, rtol=0, atol=0)


# ------------------------------------------------------------ embeddings, misc API
def test_get_and_set_embeddings():
    mlm = mega_lra.MegaForMaskedLM(tiny_config())
    assert mlm.get_output_embeddings() is mlm.mlm_head
    new = torch.nn.Embedding(37, 16)
    mlm.set_input_embeddings(new)
    assert mlm.get_input_embeddings() is new is mlm.mega.embedding_layer.word_embeddings
    mlm.tie_weights()
    assert mlm.mlm_head.weight is new.weight
    head = torch.nn.Linear(16, 37)
    mlm.set_output_embeddings(head)
    assert mlm.mlm_head is head
    with pytest.raises(ValueError, match="nn.Embedding of dimension 16"):
        mlm.set_input_embeddings(torch.nn.Embedding(37, 8))
    cls = mega_lra.MegaForSequenceClassification(tiny_config())
    assert cls.get_output_embeddings() is None
    with pytest.raises(AttributeError, match="no output embeddings"):
        cls.set_output_embeddings(head)
    base = mega_lra.MegaModel(tiny_config())
    assert base.get_input_embeddings() is base.embedding_layer.word_embeddings
    assert base.base_model is base and mlm.base_model is mlm.mega


def test_input_check_follows_the_embedding_size_after_set_input_embeddings():
    model = mega_lra.MegaModel(tiny_config())
    model.set_input_embeddings(torch.nn.Embedding(60, 16))
    assert model(torch.tensor([[55, 3]])).last_hidden_state.shape == (1, 2, 16)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 60\)"):
        model(torch.tensor([[60]]))


def test_num_parameters_counts_tied_weights_once():
    model = mega_lra.MegaForMaskedLM(tiny_config())
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    embedding = 37 * 16
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - embedding
    model.mega.requires_grad_(False)
    head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("mega."))
    assert model.num_parameters(only_trainable=True) == head


def test_can_generate_and_gradient_checkpointing_flags():
    assert mega_lra.MegaForCausalLM.can_generate()
    assert not any(
        cls.can_generate()
        for cls in (mega_lra.MegaModel, mega_lra.MegaForMaskedLM, mega_lra.MegaForQuestionAnswering)
    )
    model = mega_lra.MegaForTokenClassification(tiny_config())
    assert not model.is_gradient_checkpointing
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing and model.mega.gradient_checkpointing
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


# ------------------------------------------------------------------- from_pretrained
@pytest.fixture
def saved(tmp_path):
    model = perturb_(mega_lra.MegaModel(tiny_config())).eval()
    model.save_pretrained(tmp_path / "base")
    return model, tmp_path / "base"


@pytest.mark.parametrize(
    "dtype,expected",
    [
        (torch.float16, torch.float16),
        ("float16", torch.float16),
        ("torch.bfloat16", torch.bfloat16),
        ("float64", torch.float64),
        ("auto", torch.float32),  # config.json says float32
        (None, torch.float32),
    ],
)
def test_torch_dtype_accepts_dtypes_names_and_auto(saved, dtype, expected):
    model, folder = saved
    loaded = mega_lra.MegaModel.from_pretrained(folder, torch_dtype=dtype)
    assert loaded.dtype == expected and loaded.config.torch_dtype == str(expected)[6:]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(IDS).last_hidden_state.float(),
            model(IDS).last_hidden_state,
            rtol=0.05 if expected in (torch.float16, torch.bfloat16) else 1e-5,
            atol=0.05 if expected in (torch.float16, torch.bfloat16) else 1e-5,
        )
    assert mega_lra.MegaModel.from_pretrained(folder, dtype=dtype).dtype == expected  # v5 name


def test_auto_dtype_without_config_entry_uses_the_checkpoint_dtype(tmp_path):
    model = mega_lra.MegaModel(tiny_config()).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data.pop("torch_dtype") == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert mega_lra.MegaModel.from_pretrained(tmp_path, torch_dtype="auto").dtype == torch.bfloat16
    assert mega_lra.MegaModel.from_pretrained(tmp_path).dtype == torch.float32  # as 4.x


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"torch_dtype": "float17"}, "torch_dtype='float17': expected 'auto', a torch dtype"),
        ({"torch_dtype": torch.int64}, "expected 'auto' or a floating-point torch dtype"),
        ({"torch_dtype": "cuda"}, "torch_dtype='cuda'"),
        ({"torch_dtype": "float16", "dtype": "float32"}, "disagree; pass one"),
    ],
)
def test_bad_torch_dtype_is_a_clear_error(saved, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mega_lra.MegaModel.from_pretrained(saved[1], **kwargs)


def test_keyword_arguments_go_to_the_config_or_to_init(saved):
    model, folder = saved
    plain = _quiet(mega_lra.MegaModel.from_pretrained, folder, add_pooling_layer=False)
    assert plain.pooler is None and "add_pooling_layer" not in plain.config.to_dict()
    torch.testing.assert_close(plain(IDS).last_hidden_state, model(IDS).last_hidden_state)
    tuned = mega_lra.MegaModel.from_pretrained(folder, hidden_dropout_prob=0.3)
    assert tuned.config.hidden_dropout_prob == 0.3
    with pytest.raises(TypeError, match=r"\['no_such_option'\] are neither MegaConfig fields"):
        mega_lra.MegaModel.from_pretrained(folder, no_such_option=1)
    # transformers' loader arguments are accepted
    mega_lra.MegaModel.from_pretrained(
        folder, trust_remote_code=False, low_cpu_mem_usage=True, local_files_only=True
    )


def test_config_argument_object_or_path(saved, tmp_path):
    model, folder = saved
    config = MegaConfig.from_pretrained(folder)
    config.hidden_dropout_prob = 0.25
    loaded = mega_lra.MegaModel.from_pretrained(folder, config=config)
    assert loaded.config.hidden_dropout_prob == 0.25 and loaded.config is not config
    config.save_pretrained(tmp_path / "cfg")
    assert (
        mega_lra.MegaModel.from_pretrained(
            folder, config=tmp_path / "cfg"
        ).config.hidden_dropout_prob
        == 0.25
    )
    with pytest.raises(TypeError, match="config=...\\): expected a MegaConfig or a path"):
        mega_lra.MegaModel.from_pretrained(folder, config={"hidden_size": 16})
    # with config= the folder needs no config.json (e.g. a Trainer checkpoint of weights only)
    (folder / "config.json").unlink()
    weights_only = mega_lra.MegaModel.from_pretrained(
        folder, config=MegaConfig.from_pretrained(tmp_path / "cfg")
    )
    torch.testing.assert_close(weights_only(IDS).last_hidden_state, model(IDS).last_hidden_state)


def test_strict_and_output_loading_info(saved):
    _, folder = saved
    with pytest.raises(CheckpointError, match="missing weights"):
        mega_lra.MegaForTokenClassification.from_pretrained(folder, strict=True)
    model, info = _quiet(
        mega_lra.MegaForTokenClassification.from_pretrained, folder, output_loading_info=True
    )
    assert info["missing_keys"] == ["classifier.bias", "classifier.weight"]
    assert info["unexpected_keys"] == ["pooler.dense.bias", "pooler.dense.weight"]
    assert info["mismatched_keys"] == [] and info["error_msgs"] == []


def test_mismatched_sizes_are_reinitialised_with_a_warning(saved):
    _, folder = saved
    with pytest.warns(UserWarning, match="other shapes in the checkpoint, newly initialised"):
        model = mega_lra.MegaModel.from_pretrained(
            folder, vocab_size=50, ignore_mismatched_sizes=True
        )
    assert model.get_input_embeddings().num_embeddings == 50


def test_device_map(saved):
    _, folder = saved
    assert mega_lra.MegaModel.from_pretrained(folder, device_map="cpu").device.type == "cpu"
    auto = mega_lra.MegaModel.from_pretrained(folder, device_map="auto")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert mega_lra.MegaModel.from_pretrained(folder, device_map={"": "cpu"}).device.type == "cpu"
    with pytest.raises(ValueError, match="onto one device"):
        mega_lra.MegaModel.from_pretrained(folder, device_map={"layers.0": 0, "layers.1": "cpu"})
    with pytest.raises(ValueError, match="device_map='gpu please'"):
        mega_lra.MegaModel.from_pretrained(folder, device_map="gpu please")


def test_use_safetensors_picks_the_format(saved):
    model, folder = saved
    state = model.state_dict()
    state = {k: v * 0 for k, v in state.items()}  # a different .bin beside the safetensors
    torch.save(state, folder / "pytorch_model.bin")
    from_safe = mega_lra.MegaModel.from_pretrained(folder)
    from_bin = mega_lra.MegaModel.from_pretrained(folder, use_safetensors=False)
    assert from_safe.pooler.dense.weight.abs().sum() > 0
    assert from_bin.pooler.dense.weight.abs().sum() == 0
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="use_safetensors=True"):
        mega_lra.MegaModel.from_pretrained(folder, use_safetensors=True)


# ------------------------------------------------------------------- save_pretrained
def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_save_round_trips(tmp_path, safe):
    model = perturb_(mega_lra.MegaForMaskedLM(tiny_config())).eval()
    model.save_pretrained(tmp_path, max_shard_size="8KB", safe_serialization=safe)
    stem, ext = ("model", "safetensors") if safe else ("pytorch_model", "bin")
    index = json.loads((tmp_path / f"{stem}.{ext}.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"{stem}-00001-of-{len(shards):05d}.{ext}"
    assert _files(tmp_path) == sorted(["config.json", f"{stem}.{ext}.index.json", *shards])
    # every tensor is in exactly one shard, no shard over the limit unless it is one tensor
    state = {k: v for k, v in model.state_dict().items() if k != "mlm_head.weight"}
    assert index["weight_map"].keys() == state.keys()
    assert index["metadata"]["total_size"] == sum(
        v.numel() * v.element_size() for v in state.values()
    )
    for shard in shards:
        keys = [k for k, f in index["weight_map"].items() if f == shard]
        size = sum(state[k].numel() * state[k].element_size() for k in keys)
        assert size <= 8_000 or len(keys) == 1
    loaded = mega_lra.MegaForMaskedLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, rtol=0, atol=0)


def test_tied_head_weight_is_not_written_untied_is(tmp_path):
    perturb_(mega_lra.MegaForMaskedLM(tiny_config())).save_pretrained(tmp_path / "tied")
    assert "mlm_head.weight" not in load_file(str(tmp_path / "tied" / "model.safetensors"))
    config = tiny_config(tie_word_embeddings=False)
    mega_lra.MegaForMaskedLM(config).save_pretrained(tmp_path / "untied")
    assert "mlm_head.weight" in load_file(str(tmp_path / "untied" / "model.safetensors"))


def test_overwrite_replaces_the_whole_checkpoint_and_leaves_no_stale_shards(tmp_path):
    a = perturb_(mega_lra.MegaForMaskedLM(tiny_config()), seed=1).eval()
    b = perturb_(mega_lra.MegaForMaskedLM(tiny_config()), seed=2).eval()
    a.save_pretrained(tmp_path, max_shard_size="20KB")
    before = _files(tmp_path)
    with pytest.raises(FileExistsError, match="already holds a checkpoint .*overwrite=True"):
        b.save_pretrained(tmp_path)
    assert _files(tmp_path) == before  # nothing written
    b.save_pretrained(tmp_path, overwrite=True)
    assert _files(tmp_path) == ["config.json", "model.safetensors"]
    loaded = mega_lra.MegaForMaskedLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(IDS).logits, b(IDS).logits, rtol=0, atol=0)


def test_save_refuses_a_different_config_json_but_keeps_other_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    MegaConfig(hidden_size=32).save_pretrained(tmp_path)
    with pytest.raises(FileExistsError, match="config.json"):
        mega_lra.MegaModel(tiny_config()).save_pretrained(tmp_path)
    mega_lra.MegaModel(tiny_config()).save_pretrained(tmp_path, overwrite=True)
    assert _files(tmp_path) == ["config.json", "model.safetensors", "tokenizer.json"]


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"push_to_hub": True}, NotImplementedError, "does not upload"),
        ({"variant": "fp16"}, NotImplementedError, "variant='fp16'"),
        ({"max_shard_size": "5 parsecs"}, ValueError, "max_shard_size='5 parsecs'"),
        ({"shard_size": 1}, TypeError, r"unexpected arguments \['shard_size'\]"),
    ],
)
def test_save_pretrained_rejects_what_it_cannot_do(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        mega_lra.MegaModel(tiny_config()).save_pretrained(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_save_state_dict_argument_and_non_main_process(tmp_path):
    model = mega_lra.MegaModel(tiny_config())
    model.save_pretrained(tmp_path / "none", is_main_process=False)
    assert not (tmp_path / "none").exists()
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "zeros", state_dict=state)
    loaded = mega_lra.MegaModel.from_pretrained(tmp_path / "zeros")
    assert all(float(v.abs().sum()) == 0 for v in loaded.state_dict().values())
