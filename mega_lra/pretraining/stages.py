"""How the two stages meet the rest of a run's config (`conf/train.yaml`: `stage`, `pretrained`,
`spt.*`).

- `stage`: `finetune` (the default: the task's classifier, from scratch or from `pretrained`),
  `pretrain` (self-pretraining), or `compare`: pretraining, then fine-tuning from it, beside a
  from-scratch run with the same fine-tuning steps (and, with `spt.compare_matched`, one with
  the steps of both stages), each a normal run in a sub-dir (`pretrain/`, `finetune/`,
  `scratch/`, `scratch_matched/`) of the run dir, then `comparison.json` and a side-by-side
  print. The CPU demos (`experiment=demo/spt_*`) run it for three seeds.
- Step budgets (`spt.budget_steps` B, `spt.pretrain_share` s; Amos et al.'s compute-tied
  Table 8 in steps rather than epochs): pretraining runs round(s B) steps, fine-tuning from it
  B - round(s B), and the from-scratch end of the comparison (s = 0) all B.
- Compute-matched control (`spt.match_steps_of=<pretraining run dir>`): a from-scratch run
  with `trainer.max_steps` + that run's steps, the same total as pretraining + fine-tuning.

- Random-init ablation (`spt.random_init_std`, the paper's 0.1; null: off): every parameter of
  the built model is reset to N(0, std^2) before training, in whichever stage (NFS's
  `train.rand_init`, applied before the pretrained weights are loaded, so a fine-tuning run
  keeps the loaded backbone and only its new head is drawn so).

`configure_pretrain` fills in the objective the run will use (`spt.objective`, `mask_rate`,
`pixel_loss`, so `config.yaml` records them) and points the best-checkpoint monitor (and a
plateau schedule's) at the masked metric; a monitor that the stage never logs is refused.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mega_lra.atomic_files import write_json
from mega_lra.pretraining.objectives import Objective, resolve_objective
from mega_lra.pretraining.record import read_pretrain_record

STAGES = ("finetune", "pretrain", "compare")
COMPARISON = "comparison.json"
ARMS = ("pretrain", "finetune", "scratch", "scratch_matched")


def stage_of(cfg: DictConfig) -> str:
    stage = cfg.get("stage") or "finetune"
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: expected one of {list(STAGES)}")
    if stage != "finetune" and cfg.get("pretrained"):
        raise ValueError(f"pretrained= fine-tunes (stage=finetune); not with stage={stage}")
    if cfg.get("pretrained") and cfg.get("ckpt_path"):
        raise ValueError(
            "pretrained= and ckpt_path= both set: pretrained takes only the weights (fresh "
            "optimiser and step counter), ckpt_path restores a whole training state; choose one"
        )
    return stage


def spt_node(cfg: DictConfig) -> dict[str, Any]:
    node = cfg.get("spt")
    return {} if node is None else OmegaConf.to_container(node, resolve=True)


def random_init_std(cfg: DictConfig) -> float | None:
    """`spt.random_init_std`: None (off) or a positive number; ValueError naming the key."""
    std = spt_node(cfg).get("random_init_std")
    if std is None:
        return None
    if not isinstance(std, int | float) or isinstance(std, bool) or not 0 < std < math.inf:
        raise ValueError(
            f"spt.random_init_std={std!r}: expected null (the models' own initialisation) or a "
            "positive number, the std of the N(0, std^2) every parameter is reset to (the "
            "paper's 0.1)"
        )
    return float(std)


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def pretrain_steps_of(run_dir: str | Path) -> int:
    """The optimiser steps a finished pretraining run took (its `pretrain.json`)."""
    record = read_pretrain_record(Path(run_dir))
    if record is None:
        raise ValueError(
            f"{run_dir}: no pretrain.json (not a finished stage=pretrain run dir); the step "
            "count of the pretraining stage is read from there"
        )
    return int(record["steps"])


def apply_step_options(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """`trainer.max_steps` from a step budget or a compute-matched control; what was decided
    (for `results.json`)."""
    spt = spt_node(cfg)
    budget, share = spt.get("budget_steps"), spt.get("pretrain_share")
    matched = spt.get("match_steps_of")
    info: dict[str, Any] = {}
    if budget is not None:
        if matched:
            raise ValueError("spt.budget_steps and spt.match_steps_of: choose one")
        if not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"spt.budget_steps={budget!r}: expected a positive integer")
        if share is None or not 0 <= share < 1:
            raise ValueError(
                f"spt.pretrain_share={share!r}: with spt.budget_steps, a share in [0, 1) of the "
                "budget for the pretraining stage (the paper's 0, 0.4, 0.6)"
            )
        first = round(budget * share)
        if stage == "pretrain":
            if first < 1:
                raise ValueError(f"spt.pretrain_share={share}: the pretraining stage gets 0 steps")
            steps = first
        elif cfg.get("pretrained"):
            if share == 0:
                raise ValueError("spt.pretrain_share=0 is the from-scratch end: drop pretrained=")
            steps = budget - first
        else:
            if share != 0:
                raise ValueError(
                    f"spt.pretrain_share={share} fine-tunes from a pretraining run: set "
                    "pretrained=<its run dir>, or spt.pretrain_share=0 for the from-scratch end"
                )
            steps = budget
        info = {"budget_steps": budget, "pretrain_share": share}
    elif matched:
        if stage != "finetune" or cfg.get("pretrained"):
            raise ValueError("spt.match_steps_of is a from-scratch control: no pretrained=")
        own = cfg.trainer.get("max_steps") or -1
        if own <= 0:
            raise ValueError(
                "spt.match_steps_of adds the pretraining steps to trainer.max_steps: set it"
            )
        spt_steps = pretrain_steps_of(matched)
        steps = int(own) + spt_steps
        info = {
            "role": "compute_matched",
            "matched_to": str(matched),
            "matched_pretrain_steps": spt_steps,
            "finetune_steps_matched": int(own),
        }
    else:
        return {}
    _set(cfg, "trainer.max_steps", int(steps))
    _set(cfg, "trainer.max_epochs", None)
    return info


def configure_pretrain(cfg: DictConfig) -> Objective:
    """Resolve the objective into `cfg.spt` and aim the monitors at its metric."""
    from mega_lra.models import build_classifier

    task = instantiate(cfg.task)
    classifier = build_classifier(cfg.model, task)
    objective = resolve_objective(spt_node(cfg), task, classifier.backbone)
    _set(cfg, "spt.objective", objective.kind)
    _set(cfg, "spt.mask_rate", objective.rate)
    _set(cfg, "spt.pixel_loss", None if objective.target == "tokens" else objective.loss)
    logged = {objective.monitor, "val/loss", f"{objective.monitor}_best"}
    best = (cfg.get("callbacks") or {}).get("best_checkpoint")
    if best is not None:
        if best.get("monitor") in (None, "val/acc"):
            _set(cfg, "callbacks.best_checkpoint.monitor", objective.monitor)
            _set(cfg, "callbacks.best_checkpoint.mode", objective.mode)
        elif best.monitor not in logged:
            raise ValueError(
                f"callbacks.best_checkpoint.monitor={best.monitor}: pretraining never logs it; "
                f"expected one of {sorted(logged)}"
            )
    if (cfg.get("callbacks") or {}).get("stuck_at_chance") is not None:
        _set(cfg, "callbacks.stuck_at_chance", None)  # a classification guard
    sched = cfg.get("sched")
    if sched is not None and sched.get("monitor") is not None:
        if sched.monitor == "val/acc":
            _set(cfg, "sched.monitor", objective.monitor)
            _set(cfg, "sched.mode", objective.mode)
        elif sched.monitor not in logged:
            raise ValueError(
                f"sched.monitor={sched.monitor}: pretraining never logs it; expected one of "
                f"{sorted(logged)}"
            )
    return objective


def group_view(resolved: dict[str, Any], pretrained_group: str | None) -> dict[str, Any]:
    """The config the `group` hash is taken of: a pretraining run dir (one per seed) stands in
    as the pretraining run's group, a compute-matched control's as a flag."""
    view = copy.deepcopy(resolved)
    if view.get("pretrained"):
        view["pretrained"] = {"pretrain_group": pretrained_group}
    spt = view.get("spt")
    if isinstance(spt, dict) and spt.get("match_steps_of"):
        spt["match_steps_of"] = True
    return view


# ------------------------------------------------------------------------- compare stage
def arm_config(cfg: DictConfig, arm: str, run_dir: Path) -> DictConfig:
    """The config of one arm of `stage=compare`, run into `run_dir/<arm>`."""
    sub = copy.deepcopy(cfg)
    spt = spt_node(cfg)
    _set(sub, "run_dir", str(run_dir / arm))
    for key in ("pretrain_steps", "pretrain_lr", "compare_matched"):
        _set(sub, f"spt.{key}", None)
    if arm == "pretrain":
        _set(sub, "stage", "pretrain")
        if spt.get("pretrain_steps"):
            _set(sub, "trainer.max_steps", int(spt["pretrain_steps"]))
            _set(sub, "trainer.max_epochs", None)
        if spt.get("pretrain_lr"):
            _set(sub, "optim.lr", float(spt["pretrain_lr"]))
    else:
        _set(sub, "stage", "finetune")
        _set(sub, "spt.objective", "auto")
        _set(sub, "spt.mask_rate", None)
        _set(sub, "spt.pixel_loss", None)
        _set(sub, "spt.span_length", None)
        if arm == "finetune":
            _set(sub, "pretrained", str(run_dir / "pretrain"))
        elif arm == "scratch_matched":
            _set(sub, "spt.match_steps_of", str(run_dir / "pretrain"))
    return sub


def run_compare(cfg: DictConfig, train: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """`stage=compare`: every arm in turn (each resumable on its own), then the comparison."""
    run_dir = Path(cfg.run_dir)
    done = run_dir / COMPARISON
    if done.is_file():
        if not cfg.get("resume"):
            raise ValueError(f"{run_dir} already holds {COMPARISON}; use a new run dir")
        return json.loads(done.read_text())
    arms = [a for a in ARMS if a != "scratch_matched" or spt_node(cfg).get("compare_matched")]
    results = {arm: train(arm_config(cfg, arm, run_dir)) for arm in arms}
    out = {
        "seed": int(cfg.seed),
        "experiment": (cfg.get("run") or {}).get("experiment"),
        "arms": {arm: _arm_summary(arm, r) for arm, r in results.items()},
    }
    write_json(done, out)
    print(comparison_text([out]))
    return out


def _arm_summary(arm: str, r: dict[str, Any]) -> dict[str, Any]:
    if arm == "pretrain":
        return {
            "steps": r["steps"],
            "metric": r["objective"]["metric"],
            "best_val_metric": r["best_val_metric"],
            "test_metric": r["test_metric"],
        }
    spt = r.get("spt") or {}
    return {
        "steps": r["steps"],
        "total_steps": spt.get("total_steps", r["steps"]),
        "best_val_accuracy": r["best_val_accuracy"],
        "test_accuracy": r["test_accuracy"],
    }


LABELS = {
    "scratch": "from scratch (same fine-tuning steps)",
    "scratch_matched": "from scratch (pretraining + fine-tuning steps)",
    "finetune": "self-pretrained, then fine-tuned",
}


def comparison_text(comparisons: list[dict[str, Any]]) -> str:
    """Test accuracy per arm, mean ± sample std over the comparisons (seeds) given."""

    def stat(values: list[float]) -> str:
        mean = statistics.fmean(values)
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{mean:6.2f}{spread}"

    seeds = [c["seed"] for c in comparisons]
    lines = ["", f"== self-pretraining vs from scratch: test accuracy (%), seeds {seeds} =="]
    for arm in ("scratch", "scratch_matched", "finetune"):
        rows = [c["arms"][arm] for c in comparisons if arm in c["arms"]]
        if not rows:
            continue
        test = [100 * r["test_accuracy"] for r in rows]
        val = [100 * r["best_val_accuracy"] for r in rows if r["best_val_accuracy"] is not None]
        steps = sorted({r["total_steps"] for r in rows})
        lines.append(
            f"  {LABELS[arm]:<47} test {stat(test)}   best val {stat(val) if val else 'n/a'}"
            f"   steps {'/'.join(map(str, steps))}  [{' '.join(f'{t:.1f}' for t in test)}]"
        )
    pre = [c["arms"]["pretrain"] for c in comparisons if "pretrain" in c["arms"]]
    if pre:
        metric = pre[0]["metric"]
        vals = [r["test_metric"] for r in pre if r["test_metric"] is not None]
        lines.append(
            f"  pretraining: test {metric} {stat(vals) if vals else 'n/a'} "
            f"(fractions), {pre[0]['steps']} steps"
        )
    return "\n".join(lines)


try:  # a Hydra callback: the demos' multirun prints the comparison over every seed at its end
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class CompareSummary(_HydraCallback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        found = [json.loads(p.read_text()) for p in sorted(root.rglob(COMPARISON))]
        if found:
            print(comparison_text(found))
            print(f"  (from {len(found)} {COMPARISON} under {root})")
