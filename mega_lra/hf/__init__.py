"""The Hugging Face-compatible Mega family: `MegaConfig`, `MegaModel` and its six heads.

- `configuration.py`: `MegaConfig` (every HF MegaConfig field, same names and defaults) and
  `ConfigError`.
- `modeling.py`: the model classes.
- `pretrained.py`: `from_pretrained` / `save_pretrained` (config.json, safetensors or
  pytorch_model.bin, sharded indexes, key renames, resizing).
- `state_dict.py`: reading and writing checkpoint files and HF state-dict names.
- `outputs.py`: the output dataclasses (HF's attribute names).
- `generation.py`: greedy / sampled decoding with the exact decoding state.
- `auto.py`: registration with transformers v5's Auto classes (imports transformers; opt-in).
"""

from mega_lra.hf.configuration import ConfigError, MegaConfig
from mega_lra.hf.modeling import (
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
    MegaModel,
    MegaPreTrainedModel,
)

__all__ = [
    "ConfigError",
    "MegaConfig",
    "MegaForCausalLM",
    "MegaForMaskedLM",
    "MegaForMultipleChoice",
    "MegaForQuestionAnswering",
    "MegaForSequenceClassification",
    "MegaForTokenClassification",
    "MegaModel",
    "MegaPreTrainedModel",
]
