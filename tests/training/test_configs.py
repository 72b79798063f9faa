"""Every shipped config composes through Hydra from the YAML files (the CLI's path) and builds;
the experiments hold the paper's recipes (mega_paper_and_code.md §2.1) and, for Mega with full
attention, the parameter counts of §2.2 within 5%."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate

from mega_lra.models import count_parameters
from mega_lra.training.config import CONF_DIR, compose

TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx", "sc_raw"]
MODELS = ["mega", "mega_chunk", "transformer"]
EXPERIMENTS = sorted(
    str(p.relative_to(CONF_DIR / "experiment").with_suffix(""))
    for p in (CONF_DIR / "experiment").rglob("*.yaml")
)

# §2.1, transcribed: layers, d, v = d_FFN, z, truncation, attention, norm, pre-norm, dropout,
# lr, weight decay, effective batch, warm-up, total updates, warm-up power
RECIPES = {
    "listops": (6, 80, 160, 64, 1024, "softmax", "layernorm", False, 0.1, 1e-3, 0.01, 64, 3000, 90000, 1),  # noqa: E501
    "text": (4, 128, 256, 64, 1024, "softmax", "scalenorm", False, 0.1, 4e-3, 0.01, 50, 10000, 25000, 1),  # noqa: E501
    "retrieval": (6, 128, 256, 64, 1024, "softmax", "scalenorm", False, 0.1, 3e-3, 0.04, 64, 10000, 91960, 1),  # noqa: E501
    "image": (8, 160, 320, 96, 1024, "laplace", "batchnorm", True, 0.0, 1e-2, 0.02, 50, 9000, 180000, 1),  # noqa: E501
    "pathfinder": (6, 128, 256, 64, 1024, "laplace", "batchnorm", True, 0.0, 1e-2, 0.01, 128, 50000, 250000, 1),  # noqa: E501
    "pathx": (4, 64, 128, 32, 4096, "laplace", "syncbatchnorm", True, 0.0, 1e-2, 0.01, 128, 25000, 125000, 2),  # noqa: E501
}  # fmt: skip
SPEECH = {  # d, lr (base / big); the rest shared: 6 layers, laplace, batchnorm, pre-norm, ...
    "base": (60, 1e-2, 0.34e6),
    "big": (72, 8e-3, 0.476e6),
}
PARAMS = {  # §2.2, without the token embedding, full attention
    "listops": 0.60e6,
    "text": 0.96e6,
    "retrieval": 1.45e6,
    "image": 2.84e6,
    "pathfinder": 1.39e6,
    "pathx": 0.38e6,
}


def test_every_experiment_file_is_listed_and_composes():
    expected = {f"lra/{m}/{t}" for m in MODELS for t in PARAMS}
    expected |= {"speech/mega_sc_raw_base", "speech/mega_sc_raw_big"}
    expected |= {"demo/listops", "demo/pathfinder"}
    assert expected <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        cfg = compose([f"experiment={name}"])
        assert cfg.run.experiment == name
        model = instantiate(cfg.model)
        assert model.num_classes == cfg.task.num_classes
        assert model.name == cfg.run.model


def _common_mega_recipe(cfg):
    m = cfg.model
    assert m.bidirectional is True and m.activation == "silu"
    assert m.ema_projection_size == 16
    assert m.relative_positional_bias == "simple"
    assert m.hidden_dropout_prob == 0.0 and m.nffn_activation_dropout_prob == 0.0
    assert m.attention_probs_dropout_prob == 0.0
    assert m.final_norm == m.normalize_before_mega == m.normalize_before_ffn
    o, s, t = cfg.optim, cfg.sched, cfg.trainer
    assert list(o.betas) == [0.9, 0.98] and o.eps == 1e-8 and list(o.param_groups) == []
    assert s.init_lr == 1e-7 and s.end_lr == 0.0 and s.total_steps is None
    assert t.gradient_clip_val == 1.0 and t.gradient_clip_algorithm == "norm"


@pytest.mark.parametrize("task", sorted(RECIPES))
@pytest.mark.parametrize("model", ["mega", "mega_chunk"])
def test_lra_experiments_hold_the_papers_recipe(task, model):
    cfg = compose([f"experiment=lra/{model}/{task}"])
    layers, d, v, z, trunc, attn, norm, pre, drop, lr, wd, batch, warm, total, power = RECIPES[task]
    m = cfg.model
    assert cfg.run.task == task and cfg.task.name == task
    assert (m.num_hidden_layers, m.hidden_size, m.intermediate_size) == (layers, d, v)
    assert (m.nffn_hidden_size, m.shared_representation_size, m.truncation) == (v, z, trunc)
    assert (m.attention_activation, m.normalization_type) == (attn, norm)
    assert (m.normalize_before_mega, m.dropout_prob) == (pre, drop)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (lr, wd)
    assert cfg.effective_batch_size == batch
    assert (cfg.sched.warmup_steps, cfg.sched.warmup_power) == (warm, power)
    assert cfg.trainer.max_steps == total
    chunk = {"mega": -1, "mega_chunk": 4096 if task == "pathx" else 128}[model]
    assert m.chunk_size == chunk and m.use_chunking == (model == "mega_chunk")
    _common_mega_recipe(cfg)


@pytest.mark.parametrize("size", sorted(SPEECH))
def test_speech_experiments_hold_the_papers_recipe(size):
    cfg = compose([f"experiment=speech/mega_sc_raw_{size}"])
    d, lr, params = SPEECH[size]
    m = cfg.model
    assert cfg.run.model == "mega_chunk" and cfg.task.name == "sc_raw"
    assert (m.num_hidden_layers, m.hidden_size, m.intermediate_size) == (6, d, 2 * d)
    assert (m.shared_representation_size, m.truncation, m.chunk_size) == (d // 2, 1000, 1000)
    assert (m.attention_activation, m.normalization_type, m.normalize_before_mega) == (
        "laplace",
        "batchnorm",
        True,
    )
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.effective_batch_size) == (lr, 0.01, 20)
    assert (cfg.sched.warmup_steps, cfg.trainer.max_steps) == (10000, 250000)
    _common_mega_recipe(cfg)
    count = count_parameters(instantiate(cfg.model), exclude_token_embedding=True)
    assert count == pytest.approx(params, rel=0.05)


@pytest.mark.parametrize("task", sorted(PARAMS))
def test_mega_parameter_counts_match_the_paper(task):
    cfg = compose([f"experiment=lra/mega/{task}"])
    count = count_parameters(instantiate(cfg.model), exclude_token_embedding=True)
    assert count == pytest.approx(PARAMS[task], rel=0.05)


def test_effective_batch_gives_the_accumulation():
    from mega_lra.training.runner import apply_effective_batch

    for task, per_gpu, devices, accumulate in [
        ("text", 25, 1, 2),
        ("retrieval", 8, 1, 8),
        ("pathx", 2, 1, 64),
        ("pathx", 2, 8, 8),
    ]:
        cfg = compose([f"experiment=lra/mega/{task}", f"trainer.devices={devices}"])
        assert cfg.loader.batch_size == per_gpu
        apply_effective_batch(cfg)
        assert cfg.trainer.accumulate_grad_batches == accumulate
    cfg = compose(["experiment=lra/mega/text", "loader.batch_size=20"])
    with pytest.raises(ValueError, match="effective_batch_size=50 is not a multiple"):
        apply_effective_batch(cfg)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_task_model_pair_builds_without_an_experiment(task, model):
    cfg = compose([f"task={task}", f"model={model}"])
    task_obj = instantiate(cfg.task)
    net = instantiate(cfg.model)
    assert net.num_classes == task_obj.num_classes
    assert net.input_kind == task_obj.input_kind and net.head_kind == task_obj.head
    assert net.config.max_positions == task_obj.max_length
    if task_obj.input_kind == "tokens":
        assert net.encoder.embed.num_embeddings == task_obj.vocab_size


GROUPS = ["trainer", "callbacks", "logger", "optim", "sched", "loader", "paths", "model"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes_and_builds(group, tmp_path):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg = compose([f"{group}={option}"], run_dir=tmp_path)
        node = cfg[group]
        if group in ("callbacks", "logger"):
            entries = {} if node is None else node
            for name, entry in entries.items():
                obj = instantiate(entry)
                assert type(obj).__name__ == entry._target_.rsplit(".", 1)[-1], name
        elif group == "trainer":
            if node.accelerator == "gpu" and not torch.cuda.is_available():
                assert node.precision == "bf16-mixed"  # composed; building it needs a GPU
                continue
            trainer = instantiate(node, logger=False, enable_checkpointing=False)
            assert trainer.gradient_clip_val == node.gradient_clip_val
        elif group in ("optim", "sched", "model"):
            assert instantiate(node) is not None


def test_logger_options_always_write_csv():
    for option in (p.stem for p in (CONF_DIR / "logger").glob("*.yaml")):
        cfg = compose([f"logger={option}"])
        assert cfg.logger.csv._target_.endswith("ResumableCSVLogger"), option
    assert compose([]).logger.wandb.offline is True  # default: W&B offline, no network


def test_bad_overrides_name_the_choices():
    with pytest.raises(MissingConfigException) as err:
        compose(["model=megga"])
    assert all(name in str(err.value) for name in MODELS)
    with pytest.raises(ConfigCompositionException, match="model.chunk_sise"):
        compose(["model.chunk_sise=4"])


def test_config_tree_mirrors_code():
    """Every `_target_` in conf/ names an importable object."""
    import importlib
    import re

    targets = set()
    for path in Path(CONF_DIR).rglob("*.yaml"):
        targets |= set(re.findall(r"_target_:\s*([\w.]+)", path.read_text()))
    assert targets
    for target in targets:
        module, _, name = target.rpartition(".")
        assert hasattr(importlib.import_module(module), name), target
