"""Fine-tuning from a pretraining checkpoint: `load_pretrained(classifier, source, ...)`.

`source` is a pretraining run dir (its `checkpoints/best.ckpt`, the best validation value of the
masked metric) or a checkpoint file. It is read with the suite's safe loader
(`torch.load(weights_only=True)`, `mega_lra.training.checkpoint_files`).

Before any tensor is copied, the checkpoint's facts are compared with the classifier's and a
difference is refused by name: the architecture (backbone class, hidden size, the backbone's
`describe()`), the direction (causal or bidirectional, `objectives.is_causal`), the input kind
and the vocabulary size. Then the key accounting: the checkpoint's keys that the classifier
lacks must be exactly the pretraining head (`lm_head.*`) and the mask token / channel
(`mask_embedding`, `mask_channel`); the classifier's keys that the checkpoint lacks must be
exactly its head (`classifier.*`); every shared key must have the same shape. Anything else is
one `PretrainedMismatchError` listing every offending key. Shared tensors (parameters and
buffers, norms included) are copied bit for bit; the head keeps its fresh initialisation. Only
weights are taken: the optimiser, schedule, step counter and RNG state of fine-tuning start
fresh (this is not `resume`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mega_lra.pretraining.model import SPT_ONLY_KEYS
from mega_lra.pretraining.objectives import is_causal
from mega_lra.pretraining.record import read_pretrain_record
from mega_lra.training.checkpoint_files import load_checkpoint

BEST = Path("checkpoints") / "best.ckpt"
HEAD_PREFIX = "classifier."
SPT_HEAD_PREFIX = "lm_head."


class PretrainedMismatchError(ValueError):
    """A pretraining checkpoint that does not fit the model being fine-tuned."""


def checkpoint_path(source: str | Path) -> Path:
    """A run dir -> its `checkpoints/best.ckpt`; a file -> itself."""
    path = Path(source).expanduser()
    if path.is_dir():
        best = path / BEST
        if not best.is_file():
            raise FileNotFoundError(
                f"pretrained={source}: no {BEST} in that run dir (is it a finished stage=pretrain "
                f"run?); give a checkpoint file instead, e.g. pretrained={path / 'checkpoints'}"
                "/last.ckpt"
            )
        return best
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={source}: no such run dir or checkpoint file")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_facts(model: nn.Module) -> dict[str, Any]:
    """What must agree between the stages (plain values, stored in pretraining checkpoints)."""
    encoder = getattr(model, "encoder", None)
    embed = getattr(encoder, "embed", None)
    return {
        "backbone": model.backbone_path,
        "label": model.label,
        "hidden_size": int(model.hidden_size),
        "input_kind": model.input_kind,
        "vocab_size": None if embed is None else int(embed.num_embeddings),
        "causal": is_causal(model.backbone),
        "describe": model.describe(),
    }


def _refusals(saved: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    out = []
    if saved.get("backbone") != here["backbone"]:
        out.append(
            f"architecture: pretrained {saved.get('backbone')} ({saved.get('label')}), "
            f"fine-tuning {here['backbone']} ({here['label']})"
        )
    if saved.get("hidden_size") != here["hidden_size"]:
        out.append(
            f"architecture: hidden_size {saved.get('hidden_size')} pretrained, "
            f"{here['hidden_size']} here"
        )
    a, b = saved.get("describe") or {}, here["describe"]
    for key in sorted(set(a) | set(b)):
        if key != "label" and a.get(key) != b.get(key):
            out.append(f"architecture: {key} {a.get(key)!r} pretrained, {b.get(key)!r} here")
    if saved.get("causal") != here["causal"]:
        word = {True: "causal", False: "bidirectional"}
        out.append(
            f"direction: pretrained {word.get(saved.get('causal'), '?')}, fine-tuning "
            f"{word[here['causal']]}"
        )
    if saved.get("input_kind") != here["input_kind"]:
        out.append(f"input kind: {saved.get('input_kind')} pretrained, {here['input_kind']} here")
    if saved.get("vocab_size") != here["vocab_size"]:
        out.append(
            f"vocabulary: {saved.get('vocab_size')} ids pretrained, {here['vocab_size']} here"
        )
    return out


def account_keys(
    target: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]
) -> list[str]:
    """Every key problem between the classifier's state (`target`) and the pretrained one."""
    missing = sorted(k for k in target if k not in saved and not k.startswith(HEAD_PREFIX))
    unexpected = sorted(
        k
        for k in saved
        if k not in target and not k.startswith(SPT_HEAD_PREFIX) and k not in SPT_ONLY_KEYS
    )
    shapes = sorted(
        f"{k} {tuple(saved[k].shape)} pretrained, {tuple(target[k].shape)} here"
        for k in target
        if k in saved and tuple(saved[k].shape) != tuple(target[k].shape)
    )
    problems = [f"missing from the checkpoint: {k}" for k in missing]
    problems += [f"not in this model: {k}" for k in unexpected]
    problems += [f"shape: {s}" for s in shapes]
    return problems


@dataclass
class Pretrained:
    """A pretraining checkpoint, read once: where it is and what it holds."""

    source: str
    path: Path
    checkpoint: dict[str, Any]

    @property
    def spt(self) -> Mapping[str, Any]:
        return self.checkpoint["spt"]

    @property
    def group(self) -> str | None:
        """The pretraining run's group (fine-tuning runs from it share a group across seeds)."""
        return self.spt.get("group")

    @property
    def run_dir(self) -> Path:
        parent = self.path.parent
        return parent.parent if parent.name == "checkpoints" else parent


def read_pretrained(source: str | Path) -> Pretrained:
    """The checkpoint of `pretrained=` (a run dir or a file), loaded safely; an error naming it
    when it is not a pretraining checkpoint."""
    path = checkpoint_path(source)
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.get("spt"), Mapping):
        raise PretrainedMismatchError(
            f"pretrained={source}: {path} is not a self-pretraining checkpoint (no 'spt' "
            "record); give the run dir or checkpoint of a stage=pretrain run"
        )
    return Pretrained(str(source), path, checkpoint)


def load_pretrained(
    model: nn.Module,
    pretrained: Pretrained | str | Path,
    *,
    data_manifest: str | None = None,
    copy: bool = True,
) -> dict[str, Any]:
    """Checks the pretraining checkpoint against `model` (an `LRAClassifier`) and copies its
    encoder and backbone in (`copy=False`: checks only, for a resumed run); returns what
    `results.json` records about the pretraining run."""
    if not isinstance(pretrained, Pretrained):
        pretrained = read_pretrained(pretrained)
    source, path, checkpoint = pretrained.source, pretrained.path, pretrained.checkpoint
    spt = pretrained.spt
    problems = _refusals(spt.get("model") or {}, model_facts(model))
    if data_manifest is not None and spt.get("data_manifest") not in (None, data_manifest):
        problems.append(
            f"data: pretrained on task {spt.get('task')!r} with data manifest "
            f"{str(spt.get('data_manifest'))[:12]}, fine-tuning on {data_manifest[:12]} "
            "(self-pretraining uses the fine-tuning task's own training data)"
        )
    state = {
        k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
    }
    target = model.state_dict()
    problems += account_keys(target, state)
    if problems:
        raise PretrainedMismatchError(
            f"pretrained={source}: {path} does not fit this model:\n  - "
            + "\n  - ".join(problems)
            + "\nFine-tune with the same model node, task and direction as the pretraining run"
        )
    shared = {k: state[k] for k in target if k in state}
    if copy:
        result = model.load_state_dict(shared, strict=False)
        assert all(k.startswith(HEAD_PREFIX) for k in result.missing_keys), result.missing_keys
    objective = spt.get("objective") or {}
    run_dir = pretrained.run_dir
    record = read_pretrain_record(run_dir) or {}
    return {
        "role": "finetuned",
        "pretrain_run": str(run_dir),
        "pretrain_checkpoint": str(path),
        "checkpoint_sha256": sha256_file(path),
        "pretrain_group": spt.get("group"),
        "objective": objective.get("kind"),
        "mask_rate": objective.get("rate"),
        "loss": objective.get("loss"),
        "metric": objective.get("metric"),
        "pretrain_val_metric": spt.get("best_val_metric"),
        # the pretraining stage's steps (its record), and the step of the checkpoint taken
        "pretrain_steps": int(record.get("steps", checkpoint.get("global_step", 0))),
        "checkpoint_step": int(checkpoint.get("global_step", 0)),
        "pretrain_train_fraction": spt.get("train_fraction"),
        "loaded_tensors": len(shared),
    }
