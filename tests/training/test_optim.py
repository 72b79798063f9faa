"""Optimiser parameter groups: the paper's default decays everything; rules put each parameter in
exactly one group; AdamW's decay is decoupled (fairseq's Adam)."""

import pytest
import torch

from mega_lra.models import LRAClassifier, MegaBackbone
from mega_lra.training.optim import adamw, build_param_groups


def tiny_mega():
    return LRAClassifier(
        MegaBackbone,
        num_classes=3,
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=2,
        intermediate_size=16,
        nffn_hidden_size=16,
        shared_representation_size=4,
        ema_projection_size=2,
        max_length=32,
        relative_positional_bias="simple",
        relative_bias_layout="original",
        normalization_type="layernorm",
    )


def group_of(groups):
    return {id(p): g["name"] for g in groups for p in g["params"]}


def test_default_is_one_group_with_every_parameter():
    model = tiny_mega()
    groups = build_param_groups(model)
    assert len(groups) == 1
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_each_parameter_lands_in_exactly_one_group_first_rule_wins():
    model = tiny_mega()
    rules = [
        {"name": "ema", "match": ["ema_gate"], "lr": 1e-4},
        {"name": "no_decay", "match": ["norm", "bias"], "weight_decay": 0.0},
    ]
    groups = build_param_groups(model, rules)
    flat = [id(p) for g in groups for p in g["params"]]
    assert sorted(flat) == sorted(id(p) for p in model.parameters())  # no repeats, none missing
    where = group_of(groups)
    for name, p in model.named_parameters():
        if "ema_gate" in name:
            assert where[id(p)] == "ema", name
        elif name.endswith("bias") or ".norm." in name or "final_norm" in name:
            assert where[id(p)] == "no_decay", name
        else:
            assert where[id(p)] == "default", name
    by_name = {g["name"]: g for g in groups}
    assert by_name["ema"]["lr"] == 1e-4 and by_name["no_decay"]["weight_decay"] == 0.0


def test_bad_rule_names_the_key():
    with pytest.raises(ValueError, match=r"optim.param_groups\[0\].*unknown \['wd'\]"):
        build_param_groups(tiny_mega(), [{"match": ["norm"], "wd": 0.0}])
    with pytest.raises(ValueError, match="'match'"):
        build_param_groups(tiny_mega(), [{"weight_decay": 0.0}])


def test_regex_rules_choose_parameters_by_their_full_name():
    model = tiny_mega()
    rules = [{"name": "gates", "regex": [r"\.ema_gate\.(damping|decay)_factor$"], "lr": 1e-4}]
    where = group_of(build_param_groups(model, rules))
    for name, p in model.named_parameters():
        chosen = name.endswith(("ema_gate.damping_factor", "ema_gate.decay_factor"))
        assert where[id(p)] == ("gates" if chosen else "default"), name
    both = [{"name": "x", "match": ["qk_bias"], "regex": [r"\.h_proj\.weight$"]}]
    where = group_of(build_param_groups(model, both))  # either kind of pattern
    for name, p in model.named_parameters():
        assert (where[id(p)] == "x") == ("qk_bias" in name or name.endswith("h_proj.weight"))
    with pytest.raises(ValueError, match=r"optim.param_groups\[0\].regex"):
        build_param_groups(model, [{"regex": ["(unclosed"]}])


def test_weight_decay_is_decoupled_and_reaches_every_parameter():
    model = tiny_mega()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = adamw(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam's update is 0: only the decay moves the weights
    opt.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] * (1 - 0.1 * 0.5), msg=name)
