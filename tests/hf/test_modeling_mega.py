"""The HF-compatible Mega family without the reference environment: state-dict names and
shapes (hf_mega.md §3), heads and losses, return_dict=False tuples, decoding, generation,
save/load round trips and bad checkpoints."""

import json
import pickle

import pytest
import torch

import mega_lra
from mega_lra import MegaConfig
from mega_lra.hf.state_dict import CheckpointError
from tests.helpers import perturb_, tiny_config

ALL_CLASSES = [
    mega_lra.MegaModel,
    mega_lra.MegaForCausalLM,
    mega_lra.MegaForMaskedLM,
    mega_lra.MegaForSequenceClassification,
    mega_lra.MegaForMultipleChoice,
    mega_lra.MegaForTokenClassification,
    mega_lra.MegaForQuestionAnswering,
]


def test_state_dict_matches_hf_names_and_shapes():
    # the example of hf_mega.md §3: V=100, H=32, 2 layers, I=48, N=4, Z=16, F=40, M=64, types on
    config = MegaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=48,
        ema_projection_size=4,
        shared_representation_size=16,
        nffn_hidden_size=40,
        max_positions=64,
        add_token_type_embeddings=True,
    )
    shapes = {k: tuple(v.shape) for k, v in mega_lra.MegaModel(config).state_dict().items()}
    assert len(shapes) == 48
    expected = {
        "embedding_layer.word_embeddings.weight": (100, 32),
        "embedding_layer.token_type_embeddings.weight": (2, 32),
        "layers.0.mega_layer.qk_weight": (2, 16),
        "layers.0.mega_layer.qk_bias": (2, 16),
        "layers.0.mega_layer.norm.norm.scalar": (1,),
        "layers.0.mega_layer.ema_gate.damping_factor": (64, 4, 1),
        "layers.0.mega_layer.ema_gate.decay_factor": (64, 4, 1),
        "layers.0.mega_layer.ema_gate.ema_expansion_matrix": (64, 4, 1),
        "layers.0.mega_layer.ema_gate.kernel_projection_matrix": (64, 4),
        "layers.0.mega_layer.ema_gate.residual_weight": (32,),
        "layers.0.mega_layer.v_proj.weight": (48, 32),
        "layers.0.mega_layer.v_proj.bias": (48,),
        "layers.0.mega_layer.mx_proj.weight": (128, 32),
        "layers.0.mega_layer.mx_proj.bias": (128,),
        "layers.0.mega_layer.h_proj.weight": (32, 48),
        "layers.0.mega_layer.h_proj.bias": (32,),
        "layers.0.mega_layer.rel_pos_bias.alpha": (1, 16),
        "layers.0.mega_layer.rel_pos_bias.b_param": (1, 16),
        "layers.0.mega_layer.rel_pos_bias._float_tensor": (1,),
        "layers.0.nffn.norm.norm.scalar": (1,),
        "layers.0.nffn.fc1.weight": (40, 32),
        "layers.0.nffn.fc1.bias": (40,),
        "layers.0.nffn.fc2.weight": (32, 40),
        "layers.0.nffn.fc2.bias": (32,),
        "pooler.dense.weight": (32, 32),
        "pooler.dense.bias": (32,),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
        layer1 = key.replace("layers.0.", "layers.1.")
        assert shapes[layer1] == shape


@pytest.mark.parametrize(
    "overrides,key,shape",
    [
        ({"bidirectional": False}, "layers.0.mega_layer.ema_gate.damping_factor", (32, 4, 1)),
        (
            {"relative_positional_bias": "simple"},
            "layers.0.mega_layer.rel_pos_bias.rel_pos_bias",
            (127,),
        ),
        ({"normalization_type": "rmsnorm"}, "layers.0.mega_layer.norm.norm.weight", (32,)),
        ({"normalization_type": "batchnorm"}, "layers.0.nffn.norm.norm.running_var", (32,)),
    ],
)
def test_variant_state_dict_keys(overrides, key, shape):
    config = MegaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=48,
        ema_projection_size=4,
        shared_representation_size=16,
        nffn_hidden_size=40,
        max_positions=64,
        **overrides,
    )
    assert tuple(mega_lra.MegaModel(config).state_dict()[key].shape) == shape


def test_head_keys_and_tying():
    config = tiny_config()
    mlm = mega_lra.MegaForMaskedLM(config)
    keys = set(mlm.state_dict())
    assert {"dense.weight", "mlm_head.weight", "mlm_head.bias"} <= keys
    assert not any(k.startswith("mega.pooler") for k in keys)
    assert mlm.mlm_head.weight is mlm.mega.embedding_layer.word_embeddings.weight
    mc = mega_lra.MegaForMultipleChoice(config)
    assert "mega.pooler.dense.weight" in mc.state_dict()
    untied = mega_lra.MegaForCausalLM(
        tiny_config(tie_word_embeddings=False, is_decoder=True, bidirectional=False)
    )
    assert untied.lm_head.weight is not untied.mega.embedding_layer.word_embeddings.weight
    sc = mega_lra.MegaForSequenceClassification(tiny_config(num_labels=3))
    assert tuple(sc.state_dict()["classifier.out_proj.weight"].shape) == (3, 16)


def test_embedding_padding_row_is_zero_at_init():
    model = mega_lra.MegaModel(tiny_config(pad_token_id=1))
    assert model.embedding_layer.word_embeddings.weight[1].abs().max() == 0


def test_token_type_embeddings_are_added():
    model = perturb_(mega_lra.MegaModel(tiny_config(add_token_type_embeddings=True))).eval()
    ids = torch.randint(0, 37, (1, 6))
    zeros = model(ids).last_hidden_state
    same = model(ids, token_type_ids=torch.zeros(1, 6, dtype=torch.long)).last_hidden_state
    ones = model(ids, token_type_ids=torch.ones(1, 6, dtype=torch.long)).last_hidden_state
    torch.testing.assert_close(zeros, same)
    assert not torch.allclose(zeros, ones)


def test_causal_lm_loss_predicts_next_token():
    config = tiny_config(is_decoder=True, bidirectional=False)
    model = perturb_(mega_lra.MegaForCausalLM(config)).eval()
    ids = torch.randint(0, 37, (2, 7))
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 37), ids[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, expected)
    assert out.past_key_values is None  # labels switch the cache off, as in HF
    assert model(ids).past_key_values is not None  # decoders cache by default


@pytest.mark.parametrize(
    "num_labels,problem,labels,loss_fn",
    [
        (3, None, torch.tensor([0, 2]), lambda lg, y: torch.nn.functional.cross_entropy(lg, y)),
        (1, None, torch.tensor([0.5, -1.0]), lambda lg, y: ((lg.squeeze() - y) ** 2).mean()),
        (
            3,
            "multi_label_classification",
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
            lambda lg, y: torch.nn.functional.binary_cross_entropy_with_logits(lg, y),
        ),
    ],
)
def test_sequence_classification_losses(num_labels, problem, labels, loss_fn):
    config = tiny_config(num_labels=num_labels, problem_type=problem)
    model = perturb_(mega_lra.MegaForSequenceClassification(config)).eval()
    ids = torch.randint(0, 37, (2, 6))
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, num_labels)
    torch.testing.assert_close(out.loss, loss_fn(out.logits, labels))
    # head = first token -> dense -> tanh -> out_proj (dropout off in eval)
    hidden = model.mega(ids).last_hidden_state[:, 0]
    c = model.classifier
    torch.testing.assert_close(out.logits, c.out_proj(torch.tanh(c.dense(hidden))))


def test_question_answering_loss_and_shapes():
    model = perturb_(mega_lra.MegaForQuestionAnswering(tiny_config())).eval()
    ids = torch.randint(0, 37, (2, 8))
    start, end = torch.tensor([1, 3]), torch.tensor([2, 50])  # 50 is outside: ignored
    out = model(ids, start_positions=start, end_positions=end)
    assert out.start_logits.shape == (2, 8) and out.end_logits.shape == (2, 8)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(out.start_logits, start) + ce(out.end_logits[:1], end[:1])) / 2
    torch.testing.assert_close(out.loss, expected)


def test_multiple_choice_scores_each_choice():
    model = perturb_(mega_lra.MegaForMultipleChoice(tiny_config())).eval()
    ids = torch.randint(0, 37, (2, 3, 6))
    out = model(ids, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    pooled = model.mega(ids[1]).pooler_output  # choices of example 1 as a batch
    torch.testing.assert_close(out.logits[1], model.classifier(pooled).squeeze(-1))


def test_return_dict_false_follows_hf_tuple_layout():
    model = mega_lra.MegaModel(tiny_config()).eval()
    ids = torch.randint(0, 37, (2, 5))
    tup = model(ids, return_dict=False)
    assert len(tup) == 6 and tup[2] is None and tup[3] is None
    torch.testing.assert_close(tup[0], model(ids).last_hidden_state)
    mlm = mega_lra.MegaForMaskedLM(tiny_config()).eval()
    tup = mlm(ids, labels=ids, return_dict=False)
    assert tup[0].dim() == 0 and tup[1].shape == (2, 5, 37) and len(tup) == 6


def test_hidden_states_are_embeddings_then_each_layer():
    model = mega_lra.MegaModel(tiny_config(num_hidden_layers=3)).eval()
    ids = torch.randint(0, 37, (2, 5))
    out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 4
    torch.testing.assert_close(out.hidden_states[0], model.embedding_layer(ids))
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)


def test_no_stale_eval_cache_after_loading_weights():
    a = perturb_(mega_lra.MegaModel(tiny_config()), seed=1).eval()
    b = perturb_(mega_lra.MegaModel(tiny_config()), seed=2).eval()
    ids = torch.randint(0, 37, (2, 9))
    a(ids)  # HF would cache a's EMA kernel here and keep using it
    a.load_state_dict(b.state_dict())
    torch.testing.assert_close(a(ids).last_hidden_state, b(ids).last_hidden_state)


@pytest.mark.parametrize("act", ["softmax", "laplace", "relu2"])
def test_decoder_left_padding_gives_no_nan_and_matches_unpadded(act):
    config = tiny_config(
        is_decoder=True,
        bidirectional=False,
        attention_activation=act,
        use_chunking=True,
        chunk_size=4,
    )
    model = perturb_(mega_lra.MegaForCausalLM(config)).double().eval()
    row = torch.randint(3, 37, (6,))
    ids = torch.cat([torch.full((5,), 1), row])[None]
    mask = torch.cat([torch.zeros(5), torch.ones(6)])[None].long()
    padded = model(ids, attention_mask=mask).logits
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[0, 5:], model(row[None]).logits[0], rtol=1e-9, atol=1e-9)


def test_chunked_decoder_shorter_than_chunk():
    config = tiny_config(is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=16)
    model = mega_lra.MegaForCausalLM(config).eval()
    assert model(torch.randint(0, 37, (2, 5))).logits.shape == (2, 5, 37)


def test_any_length_works_with_chunking():
    model = mega_lra.MegaModel(tiny_config(use_chunking=True, chunk_size=4)).eval()
    assert model(torch.randint(0, 37, (2, 7))).last_hidden_state.shape == (2, 7, 16)


def test_cached_forward_equals_full_forward():
    config = tiny_config(
        is_decoder=True,
        bidirectional=False,
        attention_activation="laplace",
        use_chunking=True,
        chunk_size=4,
        truncation=3,
    )
    model = perturb_(mega_lra.MegaForCausalLM(config)).double().eval()
    ids = torch.randint(0, 37, (2, 10))
    full = model(ids, use_cache=False).logits
    out = model(ids[:, :6], use_cache=True)
    logits = [out.logits]
    cache = out.past_key_values
    for t in range(6, 10):
        mask = torch.ones(2, t + 1, dtype=torch.long)  # HF passes the full mask when decoding
        out = model(ids[:, t : t + 1], attention_mask=mask, past_key_values=cache)
        cache = out.past_key_values
        logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-9, atol=1e-9)


def _greedy_without_cache(model, ids, steps):
    for _ in range(steps):
        nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def test_greedy_generate_equals_recomputing_full_forward():
    config = tiny_config(
        is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=4, truncation=5
    )
    model = perturb_(mega_lra.MegaForCausalLM(config), 0.5).double().eval()
    ids = torch.randint(3, 37, (2, 6))
    out = model.generate(ids, max_new_tokens=8, eos_token_id=None)
    torch.testing.assert_close(out, _greedy_without_cache(model, ids, 8))


def test_generate_left_padded_batch_equals_each_row_alone():
    config = tiny_config(is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=4)
    model = perturb_(mega_lra.MegaForCausalLM(config), 0.5).double().eval()
    rows = [torch.randint(3, 37, (n,)) for n in (7, 4)]
    ids = torch.full((2, 7), 1)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, 7 - len(row) :] = row
        mask[b, 7 - len(row) :] = 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None)
    for b, row in enumerate(rows):
        alone = model.generate(row[None], max_new_tokens=6, eos_token_id=None)
        torch.testing.assert_close(batched[b, 7:], alone[0, len(row) :])


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    config = tiny_config(is_decoder=True, bidirectional=False)
    model = perturb_(mega_lra.MegaForCausalLM(config), 0.5).eval()
    ids = torch.randint(3, 37, (2, 4))
    greedy = model.generate(ids, max_new_tokens=5, eos_token_id=None)
    top1 = model.generate(ids, max_new_tokens=5, do_sample=True, top_k=1, eos_token_id=None)
    torch.testing.assert_close(greedy, top1)
    s1 = model.generate(
        ids, max_new_tokens=5, do_sample=True, generator=torch.Generator().manual_seed(0)
    )
    s2 = model.generate(
        ids, max_new_tokens=5, do_sample=True, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(s1, s2)


def test_generate_stops_at_eos_and_pads_finished_rows():
    config = tiny_config(is_decoder=True, bidirectional=False)
    model = mega_lra.MegaForCausalLM(config).eval()
    with torch.no_grad():  # force token 2 (eos) everywhere
        model.lm_head.bias.fill_(-100)
        model.lm_head.bias[2] = 100
        model.config.tie_word_embeddings = False
    out = model.generate(torch.randint(3, 37, (2, 3)), max_new_tokens=5, eos_token_id=2)
    assert out.shape == (2, 4) and (out[:, -1] == 2).all()


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_save_and_load_round_trip(cls, tmp_path):
    causal = cls is mega_lra.MegaForCausalLM
    config = tiny_config(
        is_decoder=causal,
        bidirectional=not causal,
        normalization_type="batchnorm",
        num_labels=2 if cls is mega_lra.MegaForQuestionAnswering else 3,
    )
    model = perturb_(cls(config)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = cls.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    ids = torch.randint(0, 37, (2, 3, 6) if cls is mega_lra.MegaForMultipleChoice else (2, 6))
    a, b = model(ids), loaded(ids)
    for name in a:
        if name != "past_key_values":
            torch.testing.assert_close(a[name], b[name])
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["architectures"] == [cls.__name__] and saved["model_type"] == "mega"


def test_save_refuses_to_overwrite(tmp_path):
    model = mega_lra.MegaModel(tiny_config())
    model.save_pretrained(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, overwrite=True)


def test_base_and_head_checkpoints_load_into_each_other(tmp_path):
    mlm = perturb_(mega_lra.MegaForMaskedLM(tiny_config())).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    with pytest.warns(UserWarning) as record:
        base = mega_lra.MegaModel.from_pretrained(tmp_path / "mlm")
    messages = " | ".join(str(w.message) for w in record)
    assert "newly initialised: ['pooler.dense.bias', 'pooler.dense.weight']" in messages
    assert "not used by MegaModel: ['dense.bias', 'dense.weight', 'mlm_head.bias'" in messages
    ids = torch.randint(0, 37, (1, 6))
    torch.testing.assert_close(base(ids).last_hidden_state, mlm.mega(ids).last_hidden_state)
    base.save_pretrained(tmp_path / "base")
    with pytest.warns(UserWarning) as record:
        tc = mega_lra.MegaForTokenClassification.from_pretrained(tmp_path / "base", num_labels=4)
    messages = " | ".join(str(w.message) for w in record)
    assert "newly initialised: ['classifier.bias', 'classifier.weight']" in messages
    assert "not used by MegaForTokenClassification: ['pooler.dense.bias'" in messages
    assert tc.classifier.out_features == 4
    torch.testing.assert_close(tc.mega(ids).last_hidden_state, mlm.mega(ids).last_hidden_state)


def test_old_key_names_load(tmp_path):
    from safetensors.torch import load_file, save_file

    model = perturb_(mega_lra.MegaModel(tiny_config())).eval()
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    old = {
        k.replace("layers.", "encoders.").replace("ema_gate.", "move."): v for k, v in state.items()
    }
    assert any(k.startswith("encoders.") for k in old) and any(".move." in k for k in old)
    save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = mega_lra.MegaModel.from_pretrained(tmp_path)
    ids = torch.randint(0, 37, (1, 6))
    torch.testing.assert_close(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_pytorch_bin_is_read_with_weights_only(tmp_path):
    model = perturb_(mega_lra.MegaModel(tiny_config())).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = mega_lra.MegaModel.from_pretrained(tmp_path)
    ids = torch.randint(0, 37, (1, 6))
    torch.testing.assert_close(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


class _Exploit:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    mega_lra.MegaModel(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with open(tmp_path / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"x": _Exploit()}, fh)
    with pytest.raises(CheckpointError, match="refused: this pickle"):
        mega_lra.MegaModel.from_pretrained(tmp_path)


def test_mismatched_shape_names_the_key(tmp_path):
    mega_lra.MegaModel(tiny_config(hidden_size=16)).save_pretrained(tmp_path)
    with pytest.raises(
        CheckpointError,
        match="embedding_layer.word_embeddings.weight: checkpoint \\(37, 16\\), model \\(50, 16\\)",
    ):
        mega_lra.MegaModel.from_pretrained(tmp_path, vocab_size=50)


def test_missing_files_and_wrong_model_type(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        mega_lra.MegaModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type='bert'"):
        mega_lra.MegaModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(MegaConfig().to_json_string())
    with pytest.raises(CheckpointError, match="no weights file"):
        mega_lra.MegaModel.from_pretrained(tmp_path)


def test_cross_attention_checkpoint_is_refused(tmp_path):
    data = tiny_config().to_dict() | {"add_cross_attention": True}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="cross-attention is out of scope"):
        mega_lra.MegaModel.from_pretrained(tmp_path)


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="downloading it from the Hugging Face hub failed"):
        mega_lra.MegaModel.from_pretrained("mnaylor/mega-base-wikitext-does-not-exist")


def test_rmsnorm_checkpoint_warns_how_to_reproduce_hf(tmp_path):
    mega_lra.MegaModel(tiny_config(normalization_type="rmsnorm")).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="rmsnorm_hf_compat=True"):
        mega_lra.MegaModel.from_pretrained(tmp_path)


def test_gradient_checkpointing_enable_keeps_gradients():
    model = perturb_(mega_lra.MegaForSequenceClassification(tiny_config())).train()
    ids = torch.randint(0, 37, (2, 6))
    grads = []
    for enable in (False, True):
        model.zero_grad()
        if enable:
            model.gradient_checkpointing_enable()
        torch.manual_seed(0)
        model(ids, labels=torch.tensor([0, 1])).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_bad_inputs_are_clear_errors():
    model = mega_lra.MegaModel(tiny_config())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 40]]))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()


def test_simple_bias_keeps_hf_table_and_refuses_lengths_it_cannot_index():
    # HF: table of 2*max_positions-1 entries indexed around chunk_size-1 whenever chunk_size >= 0,
    # even without chunking; beyond chunk_size HF fails obscurely, we say why
    config = tiny_config(relative_positional_bias="simple", max_positions=32, chunk_size=8)
    model = mega_lra.MegaModel(config).eval()
    assert model.layers[0].mega_layer.rel_pos_bias.rel_pos_bias.shape == (63,)
    assert model(torch.randint(0, 37, (1, 8))).last_hidden_state.shape == (1, 8, 16)
    with pytest.raises(ValueError, match="length 9 exceeds what the simple relative"):
        model(torch.randint(0, 37, (1, 9)))


def test_final_norm_is_optional_and_off_for_hf():
    assert "final_norm" not in " ".join(mega_lra.MegaModel(tiny_config()).state_dict())
    config = tiny_config(final_norm=True, normalization_type="scalenorm")
    model = perturb_(mega_lra.MegaModel(config)).eval()
    ids = torch.randint(0, 37, (2, 6))
    out = model(ids, output_hidden_states=True)
    x = out.last_hidden_state
    g = model.final_norm.norm.scalar
    rms = (x / g).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.hidden_states[-1], x)
