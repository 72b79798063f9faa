"""mega-lra: Mega layers, models and the LRA suite."""

__version__ = "0.1.0"
