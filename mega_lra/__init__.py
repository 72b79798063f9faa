"""mega-lra: Mega (Moving Average Equipped Gated Attention) layers, the Hugging Face-compatible
Mega model family, and the Long Range Arena suite.

The public API is the HF family of `mega_lra.hf` (`MegaConfig`, `MegaModel` and its six heads)."""

from mega_lra.hf import *  # noqa: F403  (the names in mega_lra.hf.__all__)
from mega_lra.hf import __all__ as __all__

__version__ = "0.1.0"
