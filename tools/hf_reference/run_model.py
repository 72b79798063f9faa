"""Run a Mega checkpoint folder with transformers 4.41.2 (runs inside the reference env).

Usage::

    run_model.py FOLDER INPUTS.safetensors OUT.safetensors [--dtype float32|float64]
                 [--no-hidden-states] [--cached-prompt-len P] [--use-cache]

Loads FOLDER (``config.json`` + weights, as ``save_pretrained`` writes them) with the
transformers class named in ``config.json``'s ``architectures`` (any of the seven Mega classes),
refusing a checkpoint that does not load cleanly (missing, unexpected or mismatched keys). Runs
it in eval mode on the tensors of INPUTS whose names are forward arguments (``input_ids``,
``attention_mask``, ``token_type_ids``, ``labels``, ``start_positions``, ``end_positions``;
other keys are ignored, so a fixture's ``io.safetensors`` works as INPUTS) and writes every
output tensor to OUT with the fixture naming: ``f32.<output>`` or ``f64.<output>``, e.g.
``f64.last_hidden_state``, ``f64.pooler_output``, ``f64.logits``, ``f64.loss``,
``f64.start_logits``, ``f64.hidden_states.0`` ... (``past_key_values`` and attentions are not
written). Decoders run with ``use_cache=False`` unless ``--use-cache`` (HF's default, True).
``--cached-prompt-len P`` also writes ``<prefix>.cached_logits``: the prompt of P tokens in one
call, then one token per call (decoders only).

``--dtype float64`` applies the float64 patches of ``hf_common.float64_reference`` (see
``tests/hf/fixtures/README.md``) and fails if any float32 tensor appears. Prints one JSON line
(class, dtype, output names, versions) on success.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import hf_common as hc
import torch
import transformers
from safetensors.torch import load_file, save_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", choices=sorted(hc.DTYPES), default="float32")
    parser.add_argument("--no-hidden-states", action="store_true")
    parser.add_argument("--cached-prompt-len", type=int, default=None)
    parser.add_argument("--use-cache", action="store_true", help="decoders: HF's default True")
    ns = parser.parse_args(argv)

    for path in (ns.folder / "config.json", ns.inputs):
        if not path.is_file():
            parser.error(f"{path} does not exist")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    dtype = hc.DTYPES[ns.dtype]
    model = hc.load_model(ns.folder, dtype)
    kwargs = hc.model_inputs(load_file(str(ns.inputs)), dtype)
    if "input_ids" not in kwargs:
        parser.error(f"{ns.inputs} has no input_ids")
    if ns.cached_prompt_len is not None and not model.config.is_decoder:
        parser.error("--cached-prompt-len needs a decoder (config.is_decoder true)")

    ctx = hc.float64_reference(model) if dtype == torch.float64 else nullcontext()
    with ctx as check:
        outs = hc.forward_outputs(
            model,
            kwargs,
            hidden_states=not ns.no_hidden_states,
            use_cache=None if ns.use_cache else False,
        )
        if ns.cached_prompt_len is not None:
            cached = hc.cached_decode(model, kwargs, ns.cached_prompt_len)
            outs[f"{hc.PREFIX[dtype]}.cached_logits"] = cached.contiguous()
    if check is not None and check.fft_calls == 0:
        raise AssertionError("float64: the patched FFT was never called")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(outs, str(ns.out), metadata={"format": "pt"})
    report = {
        "class": type(model).__name__,
        "dtype": ns.dtype,
        "outputs": sorted(outs),
        **hc.versions(),
    }
    if check is not None:
        report["float64_checks"] = {"patched_fft_calls": check.fft_calls}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
