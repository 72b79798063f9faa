"""mega-lra: Mega (Moving Average Equipped Gated Attention) layers, the Hugging Face-compatible
Mega model family, and the Long Range Arena suite."""

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

__version__ = "0.1.0"

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
