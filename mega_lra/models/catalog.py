"""What models and tasks exist, read from the config tree: `conf/model/*.yaml` and
`conf/task/*.yaml`. Nothing in the suite lists them by hand; the reproduce grid, the tables, the
benchmarks and the tests ask this module.

A model's label (how tables and plots name it) is its file's `label`; a task's `label`,
`benchmark` (lra | speech | demo) and `column` (its place in that benchmark's table) come from its
task file. Files are read as plain YAML (a model file may inherit from another through Hydra's
`defaults`, e.g. Mega-chunk from Mega; its own keys win).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@cache
def _read(group: str, name: str, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """The keys of `conf/<group>/<name>.yaml`, with those of the files it lists in `defaults`
    underneath (one level of plain same-group inheritance, as the shipped files use)."""
    path = conf_dir / group / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"{group}={name}: no file {path}; expected one of {_names(group, conf_dir)}")
    node = yaml.safe_load(path.read_text()) or {}
    merged: dict[str, Any] = {}
    for parent in node.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_":
            merged.update(_read(group, parent, conf_dir))
    merged.update(node)
    return merged


def _names(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def model_names(conf_dir: Path = CONF_DIR) -> list[str]:
    """Every `model=NAME` choice: the stems of `conf/model/*.yaml`."""
    return _names("model", conf_dir)


def model_config(name: str, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """The keys of a model file (inherited ones included), as written."""
    return dict(_read("model", name, conf_dir))


def model_label(name: str, conf_dir: Path = CONF_DIR) -> str:
    """How tables and plots name model `name` (its file's `label`); the name itself for a model
    that is no longer in `conf/model/` (an old run)."""
    try:
        return str(_read("model", name, conf_dir).get("label") or name)
    except KeyError:
        return name


def task_names(conf_dir: Path = CONF_DIR) -> list[str]:
    """Every `task=NAME` choice: the stems of `conf/task/*.yaml`."""
    return _names("task", conf_dir)


def task_label(name: str, conf_dir: Path = CONF_DIR) -> str:
    try:
        return str(_read("task", name, conf_dir).get("label") or name)
    except KeyError:
        return name


def benchmark_tasks(benchmark: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The tasks of one benchmark (`lra`, `speech`, `demo`) in their table's column order."""
    found = []
    for name in task_names(conf_dir):
        node = _read("task", name, conf_dir)
        if node.get("benchmark") == benchmark:
            found.append((int(node.get("column") or 0), name))
    return [name for _, name in sorted(found)]


def lra_tasks(conf_dir: Path = CONF_DIR) -> list[str]:
    """The six LRA tasks in the paper's order (ListOps, Text, Retrieval, Image, Pathfinder,
    Path-X)."""
    return benchmark_tasks("lra", conf_dir)


def experiment_names(prefix: str = "", conf_dir: Path = CONF_DIR) -> list[str]:
    """Every `experiment=NAME` under `conf/experiment/` (e.g. prefix `lra/`)."""
    root = conf_dir / "experiment"
    names = (str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    return sorted(n for n in names if n.startswith(prefix))


def recipe_models(benchmark: str = "lra", conf_dir: Path = CONF_DIR) -> list[str]:
    """Models that have recipes `experiment=<benchmark>/<model>/<task>`."""
    return sorted({n.split("/")[1] for n in experiment_names(f"{benchmark}/", conf_dir)})


# --------------------------------------------------------------------------- building
LEGACY_TARGETS = {  # model nodes saved by earlier versions (checkpoints' configs)
    "mega_lra.models.MegaClassifier": "mega_lra.models.mega.MegaBackbone",
    "mega_lra.models.TransformerClassifier": "mega_lra.models.transformer.TransformerBackbone",
}


def _legacy_node(node: dict[str, Any]) -> dict[str, Any]:
    """An earlier version's per-model classifier node (`MegaClassifier` / `TransformerClassifier`
    with the task's facts inside) -> today's `LRAClassifier` node with the same model."""
    from mega_lra.models.classifier import TASK_FACTS

    backbone = LEGACY_TARGETS[node.pop("_target_")]
    name = node.pop("name", None)
    node = {k: v for k, v in node.items() if k not in TASK_FACTS}
    new = {"_target_": "mega_lra.models.LRAClassifier", "backbone": backbone}
    new["label"] = model_label(name) if name else ""
    if backbone.endswith("TransformerBackbone"):
        node.pop("max_positions", None)  # the task's length now arrives as max_length
        new.update(embedding_std=0.02, positions="sinusoidal")
        node.setdefault("scale_embedding", True)
    elif node.get("classifier_hidden_size") is None:
        node["classifier_hidden_size"] = node.get("intermediate_size")  # the old default
    return {**new, **node}


def build_classifier(model_cfg: Any, task: Any) -> Any:
    """The classifier of a model node (`cfg.model`: `_target_`, `backbone`, `label`, fields) for
    a task (anything with num_classes, input_kind, head, vocab_size, pad_id, max_length): the
    task's facts are passed here, never read from the model file."""
    from hydra.utils import get_class
    from omegaconf import DictConfig, OmegaConf

    from mega_lra.models.classifier import TASK_FACTS

    if isinstance(model_cfg, DictConfig):
        node = OmegaConf.to_container(model_cfg, resolve=True)
    else:
        node = dict(model_cfg)
    if node.get("_target_") in LEGACY_TARGETS:
        node = _legacy_node(node)
    target = node.pop("_target_", None)
    if not target:
        raise ValueError("model: no _target_ (expected _target_: mega_lra.models.LRAClassifier)")
    written = sorted(set(node) & set(TASK_FACTS))
    if written:
        raise ValueError(
            f"model.{written[0]}: a task fact; the task provides it (conf/task/), a model file "
            "must not set it"
        )
    facts = {key: getattr(task, key) for key in TASK_FACTS}
    return get_class(target)(**facts, **node)


def build_model(cfg: Any) -> Any:
    """The classifier of a composed training config (`cfg.model` on `cfg.task`)."""
    from hydra.utils import instantiate

    return build_classifier(cfg.model, instantiate(cfg.task))
