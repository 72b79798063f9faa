"""The LRA models: plain PyTorch (no Lightning, no Hydra in the modules), one file per part.

`LRAClassifier` (`classifier.py`) = input encoder (`encoders.py`) -> a backbone -> masked mean
pooling and classifier head (`heads.py`). Backbones, one file each: Mega / Mega-chunk
(`mega.py`), the XFM‡ Transformer (`transformer.py`), S4-v1 / S4-v2 / S4D (`s4.py`).
`catalog.py` discovers the models and tasks of `conf/` and builds a classifier from a model
config and a task.
"""

from mega_lra.models.catalog import build_classifier, build_model
from mega_lra.models.classifier import LRAClassifier, count_parameters
from mega_lra.models.encoders import RealNumberEncoder, SinusoidalPositions, TokenEncoder
from mega_lra.models.heads import ClassifierHead, masked_mean_pool
from mega_lra.models.mega import MegaBackbone
from mega_lra.models.s4 import S4DBackbone, S4V1Backbone, S4V2Backbone
from mega_lra.models.transformer import TransformerBackbone

__all__ = [
    "ClassifierHead",
    "LRAClassifier",
    "MegaBackbone",
    "RealNumberEncoder",
    "S4DBackbone",
    "S4V1Backbone",
    "S4V2Backbone",
    "SinusoidalPositions",
    "TokenEncoder",
    "TransformerBackbone",
    "build_classifier",
    "build_model",
    "count_parameters",
    "masked_mean_pool",
]
