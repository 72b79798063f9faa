"""How many sequences one BatchNorm normalises over, against the paper's recipe.

BatchNorm's statistics span the batch (and time), so a recipe trained with another per-device
batch than the original normalises over another number of sequences and may train differently,
even with the same update size (accumulation does not change it). A BatchNorm recipe records the
original's number as `paper_norm_sequences` (the per-GPU batch for `batchnorm`, the per-GPU batch
x GPUs for `syncbatchnorm`: `mega_paper_and_code.md` §2.1); the runner prints one line at the
start of a run whose number differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mega_lra.training.run_dir import world_size as config_world_size

BATCH_NORMS = ("batchnorm", "syncbatchnorm")


def norm_sequences(cfg: Mapping[str, Any], world_size: int | None = None) -> int | None:
    """Sequences per BatchNorm normalisation of a composed config: `loader.batch_size` for
    `batchnorm`, x the number of processes (`world_size`, default from `cfg.trainer`) for
    `syncbatchnorm`; None when the model has no BatchNorm."""
    norm = (cfg.get("model") or {}).get("normalization_type")
    if norm not in BATCH_NORMS:
        return None
    batch = int(cfg["loader"]["batch_size"])
    if norm == "batchnorm":
        return batch
    if world_size is None:
        world_size = config_world_size(cfg.get("trainer") or {})
    return batch * int(world_size)


def norm_sequences_note(cfg: Mapping[str, Any], world_size: int | None = None) -> str | None:
    """The one line to print when a BatchNorm run normalises over another number of sequences
    than the paper's recipe (`paper_norm_sequences`), else None."""
    paper = cfg.get("paper_norm_sequences")
    ours = norm_sequences(cfg, world_size)
    if paper is None or ours is None or ours == int(paper):
        return None
    norm = cfg["model"]["normalization_type"]
    how = f"loader.batch_size {cfg['loader']['batch_size']}"
    if norm == "syncbatchnorm":
        processes = ours // int(cfg["loader"]["batch_size"])
        how += f" x {processes} process{'' if processes == 1 else 'es'}"
    return (
        f"[mega-lra] {norm}: statistics over {ours} sequences per normalisation ({how}); the "
        f"paper's recipe normalises over {paper} (paper_norm_sequences), so training may differ"
    )


def announce_norm_sequences(
    cfg: Mapping[str, Any], world_size: int | None = None, is_global_zero: bool = True
) -> str | None:
    """Print `norm_sequences_note` once (on the first process); returns it."""
    note = norm_sequences_note(cfg, world_size)
    if note and is_global_zero:
        print(note, flush=True)
    return note
