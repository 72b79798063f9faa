"""`import mega_lra.hf_auto` registers Mega with transformers v5's Auto classes.

Kept for existing code; the module is `mega_lra.hf.auto`."""

from mega_lra.hf.auto import *  # noqa: F403
