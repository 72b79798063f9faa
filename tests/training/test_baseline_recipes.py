"""The LRA attention-baseline recipes (`experiment=lra/<model>/<task>`) hold the configs that
produced LRA's published numbers, value by value (reference/transformer_baselines.md §1-2,
reference/lra_baselines.md §0.2, §2, §3): composed through Hydra as a user runs them, each builds
its model, and LRA's Transformer has the parameter counts LRA's table prints."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

from mega_lra.models import build_model
from mega_lra.models.catalog import model_label, model_names
from mega_lra.models.classifier import count_parameters
from mega_lra.training.config import compose
from tests.helpers import run_module, tiny
from tests.training.helpers import run_overrides

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
# every model of LRA Table 1 / Mega Table 2 built on LRA's pre-LN block (Luna has its own recipes)
LRA_MODELS = (
    "xfm", "reformer", "linformer", "bigbird", "performer", "local", "sparse_transformer",
    "longformer", "linear_transformer", "sinkhorn", "synthesizer",
)  # fmt: skip

# transformer_baselines.md §2, transcribed: layers, D, heads, qkv, mlp, dropout, attention
# dropout, positions, lr, schedule, warm-up, weight decay, batch, steps
TASK_TABLE = {
    "listops": (4, 512, 8, 512, 1024, 0.1, 0.1, "sinusoidal", 0.05, "rsqrt", 1000, 0.1, 32, 5000),
    "text": (4, 256, 4, 256, 1024, 0.1, 0.1, "sinusoidal", 0.05, "rsqrt", 8000, 0.1, 32, 20000),
    "retrieval": (4, 128, 4, 128, 512, 0.1, 0.1, "sinusoidal", 0.05, "rsqrt", 8000, 0.1, 32, 5000),
    "image": (1, 128, 8, 64, 128, 0.3, 0.2, "learned", 5e-4, "lra_cosine", 175, 0.0, 256, 35000),
    "pathfinder": (4, 32, 4, 16, 32, 0.2, 0.1, "sinusoidal", 1e-3, "lra_cosine", 312, 0.0, 512, 62400),  # noqa: E501
    "pathx": (1, 32, 2, 16, 32, 0.1, 0.1, "learned", 1e-3, "lra_cosine", 2500, 0.0, 64, 500000),
}  # fmt: skip
# lra_baselines.md §2, transcribed: layers, heads, emb, qkv, mlp, dropout per model (CIFAR, PF32;
# BigBird's CIFAR heads = 4 as intended, Performer's PF32 = the maintainer's fix, LRA#37)
IMAGE_SIZES = {
    "xfm": ((1, 8, 128, 64, 128, 0.3), (4, 4, 32, 16, 32, 0.2)),
    "bigbird": ((1, 4, 128, 64, 128, 0.3), (4, 2, 64, 32, 64, 0.2)),
    "linear_transformer": ((1, 8, 128, 64, 128, 0.3), (1, 2, 128, 64, 128, 0.2)),
    "linformer": ((1, 8, 128, 64, 128, 0.3), (1, 2, 32, 16, 32, 0.2)),
    "local": ((1, 2, 128, 64, 128, 0.3), (2, 4, 64, 32, 64, 0.1)),
    "longformer": ((4, 4, 128, 64, 128, 0.3), (2, 2, 32, 16, 32, 0.1)),
    "performer": ((1, 8, 128, 64, 128, 0.3), (1, 8, 128, 64, 128, 0.2)),
    "reformer": ((4, 8, 64, 32, 64, 0.3), (2, 8, 64, 32, 64, 0.2)),
    "sinkhorn": ((1, 1, 32, 32, 64, 0.1), (2, 4, 32, 16, 64, 0.2)),
    "sparse_transformer": ((1, 8, 128, 64, 128, 0.3), (1, 8, 32, 16, 32, 0.2)),
    "synthesizer": ((1, 8, 128, 64, 128, 0.3), (2, 4, 64, 32, 64, 0.2)),
}  # fmt: skip
# lra_baselines.md §3: each model's own fields as LRA's code passes them (defaults nobody
# overrides), text tasks / image tasks
OWN = {
    "xfm": ({}, {}),
    "reformer": ({"num_hashes": 1, "num_buckets": 10},) * 2,
    "linformer": ({"projected_length": 16},) * 2,
    "bigbird": ({"block_size": 64, "num_random_blocks": 3},) * 2,
    "performer": ({"kernel": "relu"},) * 2,
    "local": ({"window_size": 50}, {"window_size": 64}),
    "sparse_transformer": ({"block_size": 50, "num_summary_columns": 10},) * 2,
    "longformer": ({"window_size": 512},) * 2,
    "linear_transformer": ({}, {}),
    "sinkhorn": ({"block_size": 50}, {"block_size": 64}),
    "synthesizer": ({"synthesizer_mode": "random", "use_dot_product": True},) * 2,
}  # fmt: skip
# ListOps' performer_base config (§0.2): FAVOR+ with 2 random features; the Synthesizer on Path-X
# (never run by LRA; R would be h x 16384^2 per layer): the factorized random mode, k = 32
SPECIAL = {
    ("performer", "listops"): {"kernel": "softmax", "num_random_features": 2},
    ("synthesizer", "pathx"): {"synthesizer_mode": "factorized_random", "factor_rank": 32},
}


def _present(model: str) -> bool:
    return model in model_names()


def _expected(model: str, task: str):
    layers, d, heads, qkv, mlp, drop, att, pos, lr, sched, warm, wd, batch, steps = TASK_TABLE[task]
    if task in ("image", "pathfinder"):
        layers, heads, d, qkv, mlp, drop = IMAGE_SIZES[model][task == "pathfinder"]
    own = OWN[model][task in ("image", "pathfinder", "pathx")]
    own = SPECIAL.get((model, task), own)
    return (layers, d, heads, qkv, mlp, drop, att, pos, lr, sched, warm, wd, batch, steps), own


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", LRA_MODELS)
def test_recipe_holds_lras_config_value_by_value(model, task):
    if not _present(model):
        pytest.fail(f"conf/model/{model}.yaml is missing")
    cfg = compose([f"experiment=lra/{model}/{task}"])
    m, o, s, t = cfg.model, cfg.optim, cfg.sched, cfg.trainer
    (layers, d, heads, qkv, mlp, drop, att, pos, lr, sched, warm, wd, batch, steps), own = (
        _expected(model, task)
    )
    assert cfg.run.experiment == f"lra/{model}/{task}" and cfg.task.name == task
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads) == (layers, d, heads)
    assert (m.qkv_size, m.ffn_hidden_size, m.dropout_prob) == (qkv, mlp, drop)
    no_dropout = model in ("bigbird", "reformer")  # their LRA attention has no dropout (§3.1, §3.3)
    assert m.attention_dropout_prob == (0.0 if no_dropout else att) and m.positions == pos
    assert m.classifier_hidden_size == mlp and m.classifier_dropout == 0.0  # Dense(mlp) head
    assert m.embedding_std == 1.0 and not m.scale_embedding and m.final_layernorm
    for key, value in own.items():
        assert m[key] == value, f"model.{key}"
    assert o.lr == lr and list(o.betas) == [0.9, 0.98] and o.eps == 1e-9
    assert o.weight_decay == (0.7 if (model, task) == ("sinkhorn", "image") else wd)
    assert o.param_groups == []  # decay on every parameter, as flax's Adam
    assert (
        s._target_.rsplit(".", 1)[-1]
        == {"rsqrt": "rsqrt_warmup", "lra_cosine": "lra_cosine"}[sched]
    )
    assert s.warmup_steps == warm
    assert cfg.loader.batch_size == cfg.effective_batch_size == batch
    assert t.max_steps == steps and t.max_epochs is None
    assert t.gradient_clip_val == (1.0 if task == "pathx" else None)  # LRA clips Path-X only
    if task == "text":
        assert cfg.task.max_length == 1001  # LRA's text config: 1,000 bytes (+ our eos)


def _lra_transformer_parameters(task: str) -> int:
    """LRA's Transformer without the token embedding, from its modules (transformer_baselines.md
    §1): per layer Q, K, V (D x qkv), out (qkv x D), MLP (D x mlp + mlp, mlp x D + D), two
    LayerNorms; a final LayerNorm; learned positions (L x D) where used; the head Dense(mlp) ->
    Dense(classes) (here bias-free, as the suite's head), on 2D inputs for retrieval."""
    layers, d, _, qkv, mlp, *_ = TASK_TABLE[task]
    if task in ("image", "pathfinder"):
        layers, _, d, qkv, mlp, _ = IMAGE_SIZES["xfm"][task == "pathfinder"]
    per_layer = 4 * d * qkv + (d * mlp + mlp) + (mlp * d + d) + 2 * 2 * d
    classes = {"listops": 10, "text": 2, "retrieval": 2, "image": 10, "pathfinder": 2, "pathx": 2}
    head_in = 2 * d if task == "retrieval" else d
    head = head_in * mlp + mlp + mlp * classes[task]
    positions = {"image": 1024, "pathx": 16384}.get(task, 0) * d
    encoder = 2 * d if task in ("image", "pathfinder", "pathx") else 0  # pixels: x * w + b
    return layers * per_layer + 2 * d + head + positions + encoder


@pytest.mark.parametrize("task", TASKS)
def test_lra_transformer_has_lras_parameter_count(task):
    """Within a head's difference of LRA's printed counts (8.94M, 3.42M, 1.05M + emb; 0.25M,
    27K, 0.54M): derived from the modules above, then equal to ours exactly."""
    net = build_model(compose([f"experiment=lra/xfm/{task}"]))
    assert net.label == model_label("xfm")
    assert count_parameters(net, exclude_token_embedding=True) == _lra_transformer_parameters(task)


@pytest.mark.parametrize("model", [m for m in LRA_MODELS if m != "xfm"])
def test_every_baseline_recipe_builds_its_model(model):
    """Each recipe's model builds (on the meta device: sizes, not values) with its label."""
    if not _present(model):
        pytest.fail(f"conf/model/{model}.yaml is missing")
    for task in TASKS:
        cfg = compose([f"experiment=lra/{model}/{task}"])
        with torch.device("meta"):
            net = build_model(cfg)
        assert net.label == model_label(model)
        assert net.backbone.hidden_size == cfg.model.hidden_size
        assert len(net.backbone.layers) == cfg.model.num_hidden_layers


# lra_baselines.md §3.5, Luna's recipes transcribed: layers, D, heads, FFN, peak lr, warm-up,
# updates, batch, weight decay, dropout, attention dropout, head width (Path-X: none in Luna's
# code; its Pathfinder architecture and optimiser with LRA's Path-X batch and steps)
LUNA = {
    "listops": (1, 512, 8, 2048, 1e-4, 1000, 5000, 32, 1e-4, 0.1, 0.1, 2048),
    "text": (4, 256, 4, 1024, 5e-5, 8000, 20000, 32, 1e-4, 0.3, 0.3, 1024),
    "retrieval": (4, 128, 4, 512, 5e-4, 8000, 20000, 32, 1e-4, 0.1, 0.1, 512),
    "image": (1, 64, 8, 128, 5e-3, 4000, 35000, 256, 0.0, 0.3, 0.1, 128),
    "pathfinder": (1, 128, 4, 128, 1e-3, 4000, 62500, 512, 0.0, 0.2, 0.1, 256),
    "pathx": (1, 128, 4, 128, 1e-3, 4000, 500000, 64, 0.0, 0.2, 0.1, 256),
}  # fmt: skip


@pytest.mark.parametrize("task", TASKS)
def test_luna_recipe_holds_the_luna_papers_config(task):
    cfg = compose([f"experiment=lra/luna/{task}"])
    m, o, s, t = cfg.model, cfg.optim, cfg.sched, cfg.trainer
    layers, d, heads, ffn, peak, warm, steps, batch, wd, drop, att, head = LUNA[task]
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads) == (layers, d, heads)
    assert (m.ffn_hidden_size, m.dropout_prob, m.attention_dropout_prob) == (ffn, drop, att)
    assert m.projected_length == 256 and not m.tie_kv and m.dynamic_projection
    assert m.positions == "learned" and m.classifier_hidden_size == head
    # fairseq's inverse_sqrt (peak lr after W warm-up updates, then peak sqrt(W / s)) is the
    # rsqrt schedule from base lr = peak sqrt(W): the lr each update sees, through the module
    assert s._target_.endswith(".rsqrt_warmup") and s.warmup_steps == warm
    factor = instantiate(s)(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=o.lr))
    lrs = []
    for _ in range(4 * warm + 1):
        lrs.append(factor.optimizer.param_groups[0]["lr"])
        factor.optimizer.step()
        factor.step()
    assert lrs[warm] == pytest.approx(peak) and lrs[4 * warm] == pytest.approx(peak / 2)
    assert list(o.betas) == [0.9, 0.98] and o.weight_decay == wd
    assert cfg.loader.batch_size == cfg.effective_batch_size == batch
    assert t.max_steps == steps and t.gradient_clip_val is None
    with torch.device("meta"):
        net = build_model(cfg)
    assert net.label == model_label("luna") == "Luna-256"


@pytest.mark.parametrize(
    "experiment", ["lra/reformer/listops", "lra/bigbird/image", "lra/luna/retrieval"]
)
def test_baseline_recipe_trains_from_the_cli(experiment, lra_data, tmp_path):
    """`python -m mega_lra.train experiment=lra/<model>/<task>` as a user runs it (a subprocess,
    the official data layout), at tiny widths: LRA's 10-bucket Reformer with the rsqrt schedule,
    BigBird's blocks on Image with LRA's cosine and learned positions, Luna on a retrieval pair."""
    model = experiment.split("/")[1]
    run = tmp_path / "run"
    qkv = [] if model == "luna" else ["model.qkv_size=8"]
    done = run_module(
        "mega_lra.train",
        f"experiment={experiment}",
        *tiny(model),
        *qkv,
        "model.classifier_hidden_size=16",
        *run_overrides(lra_data),
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["experiment"] == experiment and results["steps"] == 2
    assert results["model_info"]["label"] == model_label(model)
    assert results["model_info"]["backbone"].startswith(f"mega_lra.models.{model}.")
    assert 0.0 <= results["test_accuracy"] <= 1.0
