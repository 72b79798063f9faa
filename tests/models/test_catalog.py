"""Models and tasks are discovered from conf/ (no list by hand); a classifier is built from a
model node and a task, the task's facts coming from the task; model nodes saved by earlier
versions (in old checkpoints) still build the same network."""

from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mega_lra.models import build_classifier, build_model, catalog
from mega_lra.training.config import CONF_DIR, compose
from tests.helpers import tiny


def test_models_and_tasks_are_the_files_in_conf():
    assert catalog.model_names() == sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    assert catalog.task_names() == sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
    for name in catalog.model_names():
        text = yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())
        if "label" in text:  # a file may inherit the rest through defaults
            assert catalog.model_label(name) == text["label"]
    assert catalog.model_label("mega_chunk") == "Mega-chunk"
    assert catalog.model_label("gone_model") == "gone_model"  # an old run's model


def test_lra_tasks_are_the_papers_six_in_its_order():
    assert catalog.lra_tasks() == ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
    assert catalog.benchmark_tasks("speech") == ["sc_raw"]
    assert [catalog.task_label(t) for t in catalog.lra_tasks()] == [
        "ListOps",
        "Text",
        "Retrieval",
        "Image",
        "Pathfinder",
        "Path-X",
    ]


def test_recipe_models_are_read_from_the_experiment_folders():
    found = catalog.recipe_models("lra")
    folders = sorted(p.name for p in (CONF_DIR / "experiment" / "lra").iterdir() if p.is_dir())
    assert found == folders
    assert "lra/mega/listops" in catalog.experiment_names("lra/")


def test_the_task_facts_reach_the_model_from_the_task():
    cfg = compose(["task=retrieval", "model=mega"])
    task = instantiate(cfg.task)
    model = build_classifier(cfg.model, task)
    assert (model.num_classes, model.head_kind) == (2, "retrieval")
    assert model.encoder.embed.num_embeddings == task.vocab_size
    assert model.backbone.config.max_positions == task.max_length  # received as max_length
    assert model.classifier.dense.in_features == 2 * cfg.model.hidden_size


def test_a_model_node_may_not_carry_task_facts():
    cfg = compose(["task=listops", "model=mega", "+model.num_classes=3"])
    with pytest.raises(ValueError, match="model.num_classes: a task fact"):
        build_model(cfg)


OLD_TARGETS = {
    "mega_chunk": "mega_lra.models.MegaClassifier",
    "transformer": "mega_lra.models.TransformerClassifier",
}


def legacy_node(cfg, task) -> dict:
    """The model node an earlier version saved in its checkpoints' config for the same model: a
    per-model classifier with the task's facts inside and no backbone, label or encoder options."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("_target_", "backbone", "label", "embedding_std", "positions"):
        node.pop(key, None)
    facts = {k: getattr(task, k) for k in ("num_classes", "input_kind", "head", "vocab_size")}
    node.update(facts, pad_id=task.pad_id, max_positions=task.max_length)
    node.update(_target_=OLD_TARGETS[cfg.run.model], name=cfg.run.model)
    node["classifier_hidden_size"] = None  # the old default: intermediate_size (Mega), 2d (XFM)
    return node


@pytest.mark.parametrize("model", sorted(OLD_TARGETS))
def test_an_old_checkpoints_model_node_builds_the_same_network(model):
    """Same state-dict keys and shapes, same logits from the same weights, as today's node."""
    cfg = compose(["task=listops", f"model={model}", *tiny(model), "model.dropout_prob=0"])
    task = instantiate(cfg.task)
    today = build_classifier(cfg.model, task).eval()
    old = build_classifier(legacy_node(cfg, task), task).eval()
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes(old) == shapes(today)
    old.load_state_dict(today.state_dict())
    assert old.label == today.label and old.describe() == today.describe()
    ids = torch.randint(3, 18, (2, 24))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones(2, 24),
        "lengths": torch.tensor([24, 24]),
    }
    torch.testing.assert_close(old(batch), today(batch))


def test_conf_dir_is_the_repositorys():
    assert Path(__file__).resolve().parents[2] / "conf" == catalog.CONF_DIR
