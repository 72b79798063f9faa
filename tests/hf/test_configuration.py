"""MegaConfig: HF fields and defaults, validation messages, JSON round trip."""

import json

import pytest

from mega_lra.hf.configuration import ConfigError, MegaConfig


def test_hf_defaults():
    c = MegaConfig()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (
        30522,
        128,
        4,
        256,
    )
    assert c.relative_positional_bias == "rotary" and c.normalization_type == "scalenorm"
    assert c.add_token_type_embeddings is False and c.type_vocab_size == 2
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id) == (1, 0, 2)
    assert c.tie_word_embeddings is True and c.is_decoder is False
    assert c.chunk_size == -1 and c.use_chunking is False and c.truncation is None


def test_json_round_trip_keeps_unknown_fields(tmp_path):
    path = tmp_path / "config.json"
    data = MegaConfig(hidden_size=32, chunk_size=16, use_chunking=True).to_dict()
    data["architectures"] = ["MegaForMaskedLM"]
    data["transformers_version"] = "4.41.2"
    path.write_text(json.dumps(data))
    c = MegaConfig.from_json_file(path)
    assert c.architectures == ["MegaForMaskedLM"] and c.hidden_size == 32
    assert c.to_dict() == data | {"id2label": data["id2label"]}


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("attention_activation", "gelu", "attention_activation='gelu'"),
        ("normalization_type", "groupnorm", "normalization_type='groupnorm'"),
        ("chunk_size", 0, "chunk_size=0"),
        ("truncation", -3, "truncation=-3"),
        ("hidden_size", 0, "hidden_size=0"),
        ("dropout_prob", 1.5, "dropout_prob=1.5"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        MegaConfig(**{field: value})


def test_chunking_needs_positive_chunk():
    with pytest.raises(ConfigError, match="use_chunking=True needs chunk_size > 0"):
        MegaConfig(use_chunking=True, chunk_size=-1)


def test_non_mega_config_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type='bert'"):
        MegaConfig.from_json_file(path)


def test_simple_bias_layouts():
    hf = MegaConfig(relative_positional_bias="simple", max_positions=100, chunk_size=16)
    assert (hf.relative_bias_max_positions, hf.relative_bias_center) == (100, 15)
    orig = MegaConfig(
        relative_positional_bias="simple",
        max_positions=100,
        chunk_size=16,
        use_chunking=True,
        relative_bias_layout="original",
    )
    assert (orig.relative_bias_max_positions, orig.relative_bias_center) == (16, 15)


# ------------------------------------------------------- the PretrainedConfig surface
def test_from_pretrained_reads_a_folder_or_a_json_file(tmp_path):
    MegaConfig(hidden_size=32, num_labels=3).save_pretrained(tmp_path)
    for source in (tmp_path, tmp_path / "config.json", str(tmp_path)):
        c = MegaConfig.from_pretrained(source)
        assert c.hidden_size == 32 and c.num_labels == 3
        assert c.name_or_path == str(source)
    assert "name_or_path" not in c.to_dict() and "_name_or_path" not in c.to_dict()


def test_from_pretrained_overrides_and_returns_unused_kwargs(tmp_path):
    MegaConfig(hidden_size=32).save_pretrained(tmp_path)
    c, unused = MegaConfig.from_pretrained(
        tmp_path, return_unused_kwargs=True, chunk_size=8, add_pooling_layer=False
    )
    assert c.chunk_size == 8 and unused == {"add_pooling_layer": False}
    kept = MegaConfig.from_pretrained(tmp_path, custom_field=3)  # kept, written back
    assert kept.custom_field == 3 and kept.to_dict()["custom_field"] == 3


def test_from_pretrained_errors_name_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mega", "chunk_size": 0}))
    with pytest.raises(ConfigError, match=r"config.json: MegaConfig.chunk_size=0"):
        MegaConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        MegaConfig.from_pretrained(tmp_path / "missing")


def test_save_pretrained_and_to_json_file_never_overwrite_other_content(tmp_path):
    a, b = MegaConfig(hidden_size=32), MegaConfig(hidden_size=64)
    a.save_pretrained(tmp_path)
    a.save_pretrained(tmp_path)  # the same content: nothing to lose
    with pytest.raises(FileExistsError, match="config.json already exists with other content"):
        b.save_pretrained(tmp_path)
    assert MegaConfig.from_pretrained(tmp_path).hidden_size == 32
    b.save_pretrained(tmp_path, overwrite=True)
    assert MegaConfig.from_pretrained(tmp_path).hidden_size == 64
    path = tmp_path / "other.json"
    a.to_json_file(path)
    with pytest.raises(FileExistsError, match="other.json"):
        b.to_json_file(path)
    b.to_json_file(path, use_diff=False, overwrite=True)
    assert json.loads(path.read_text()) == b.to_dict()
    with pytest.raises(NotImplementedError, match="does not upload"):
        a.save_pretrained(tmp_path / "hub", push_to_hub=True)


def test_diff_leaves_out_inherited_defaults_only():
    c = MegaConfig()
    diff = c.to_diff_dict()
    # inherited PretrainedConfig fields at their defaults are left out, as transformers does
    for name in ("is_decoder", "add_cross_attention", "tie_word_embeddings", "return_dict"):
        assert name not in diff and name in c.to_dict()
    assert "id2label" not in diff and "output_attentions" not in diff
    # every Mega field is written, defaults included (transformers writes them all)
    for name in ("hidden_size", "use_cache", "pad_token_id", "type_vocab_size", "chunk_size"):
        assert diff[name] == getattr(c, name)
    decoder = MegaConfig(is_decoder=True, bidirectional=False, num_labels=3).to_diff_dict()
    assert decoder["is_decoder"] is True and len(decoder["id2label"]) == 3
    assert MegaConfig.from_dict(decoder) == MegaConfig(
        is_decoder=True, bidirectional=False, num_labels=3
    )


def test_num_labels_follows_id2label_as_in_transformers():
    c = MegaConfig(id2label={"0": "neg", "1": "pos"})
    assert c.num_labels == 2 and c.id2label == {0: "neg", 1: "pos"}
    assert c.label2id == {"neg": 0, "pos": 1}
    c.num_labels = 2  # same count: the names stay
    assert c.id2label == {0: "neg", 1: "pos"}
    c.num_labels = 3  # another count: LABEL_i
    assert c.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert c.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    assert "num_labels" not in c.to_dict()  # derived, as HF writes it
    with pytest.warns(UserWarning, match="id2label wins"):
        assert MegaConfig(num_labels=5, id2label={0: "a"}).num_labels == 1
    with pytest.raises(ConfigError, match="num_labels=3 but id2label has 2 entries"):
        MegaConfig.from_dict({}, num_labels=3, id2label={0: "a", 1: "b"})
    with pytest.raises(ConfigError, match="num_labels=-1"):
        c.num_labels = -1


def test_update_sets_attributes_and_validates():
    c = MegaConfig()
    c.update({"hidden_size": 64, "is_decoder": True, "bidirectional": False})
    assert (c.hidden_size, c.is_decoder, c.bidirectional) == (64, True, False)
    with pytest.raises(ConfigError, match="attention_activation='gelu'"):
        c.update({"attention_activation": "gelu"})


def test_every_field_is_an_attribute_including_inherited_ones():
    c = MegaConfig()
    for name, value in c.to_dict().items():
        assert getattr(c, name) == value or name in ("id2label", "model_type")
    assert (c.output_attentions, c.torchscript, c.is_encoder_decoder) == (False, False, False)
    assert c.architectures is None and c.torch_dtype is None and c.pruned_heads == {}
    assert c.use_return_dict is True
    c.torchscript = True
    assert c.use_return_dict is False  # as HF: torchscript models return tuples
    c.return_dict = False
    c.torchscript = False
    assert c.use_return_dict is False and MegaConfig(return_dict=False).use_return_dict is False


def test_dict_round_trip_keeps_user_attributes():
    c = MegaConfig(hidden_size=48)
    c.my_note = "kept"
    again = MegaConfig.from_dict(c.to_dict())
    assert again == c and again.my_note == "kept"
