"""Record what transformers 4.41.2's Mega API does (runs inside the reference env).

Usage::

    api_probe.py PLAN.json OUT_DIR

PLAN.json is a list of operations; each result goes to ``OUT_DIR/results.json`` (a list in the
same order) and each state dict to ``OUT_DIR/<index>.safetensors``. Operations:

- ``{"op": "config", "path": P, "kwargs": {...}, "set": {...}}``: ``MegaConfig.from_pretrained(P,
  **kwargs)``, then each ``set`` item assigned as an attribute; records ``to_dict()``,
  ``to_diff_dict()`` (less ``transformers_version``), ``num_labels``, ``id2label``, ``label2id``.
- ``{"op": "load", "class": C, "path": P, "config_set": {...} | null, "kwargs": {...}}``: HF's
  way to load with an edited config (``AutoConfig.from_pretrained(P)``, attributes set, passed as
  ``config=``) or without one; records the loading info (missing, unexpected, mismatched keys),
  the dtype, and the state dict.
- ``{"op": "resize", "class": C, "path": P, "new_num_tokens": N, "pad_to_multiple_of": M}``:
  ``resize_token_embeddings``; records the state dict, ``config.vocab_size``, whether the LM
  head still shares the embedding matrix, and the head's ``out_features``.

A ``"torch_dtype"`` string in ``kwargs`` is passed as is ("auto") or as the torch dtype it
names. Prints one JSON line (versions, operation count).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _kwargs(raw: dict) -> dict:
    out = dict(raw)
    dtype = out.get("torch_dtype")
    if isinstance(dtype, str) and dtype != "auto":
        out["torch_dtype"] = getattr(torch, dtype)
    return out


def run(op: dict, out_dir: Path, index: int) -> dict:
    if op["op"] == "config":
        config = transformers.MegaConfig.from_pretrained(op["path"], **op.get("kwargs", {}))
        for name, value in op.get("set", {}).items():
            setattr(config, name, value)
        diff = config.to_diff_dict()
        diff.pop("transformers_version", None)
        full = config.to_dict()
        full.pop("transformers_version", None)
        return {
            "to_dict": json.loads(json.dumps(full, default=str)),
            "to_diff_dict": json.loads(json.dumps(diff, default=str)),
            "num_labels": config.num_labels,
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "label2id": config.label2id,
        }
    cls = getattr(transformers, op["class"])
    if op["op"] == "load":
        kwargs = _kwargs(op.get("kwargs", {}))
        if op.get("config_set") is not None:
            config = transformers.AutoConfig.from_pretrained(op["path"])
            for name, value in op["config_set"].items():
                setattr(config, name, value)
            kwargs["config"] = config
        model, info = cls.from_pretrained(op["path"], output_loading_info=True, **kwargs)
        save_file(_state(model), str(out_dir / f"{index}.safetensors"))
        return {
            "missing_keys": sorted(info["missing_keys"]),
            "unexpected_keys": sorted(info["unexpected_keys"]),
            "mismatched_keys": sorted(k for k, *_ in info["mismatched_keys"]),
            "dtype": str(model.dtype).replace("torch.", ""),
        }
    if op["op"] == "resize":
        model = cls.from_pretrained(op["path"])
        model.resize_token_embeddings(op["new_num_tokens"], op.get("pad_to_multiple_of"))
        head = model.get_output_embeddings()
        save_file(_state(model), str(out_dir / f"{index}.safetensors"))
        return {
            "vocab_size": model.config.vocab_size,
            "tied": head is not None and head.weight is model.get_input_embeddings().weight,
            "out_features": None if head is None else head.out_features,
        }
    raise SystemExit(f"unknown op {op['op']!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    plan = json.loads(Path(argv[0]).read_text())
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    results = [run(op, out_dir, i) for i, op in enumerate(plan)]
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    print(json.dumps({"transformers": transformers.__version__, "operations": len(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
