"""MegaConfig: HF fields and defaults, validation messages, JSON round trip."""

import json

import pytest

from mega_lra.configuration import ConfigError, MegaConfig


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
