"""The LRA classifiers: plain PyTorch (no Lightning, no Hydra), one file per part.

input encoder (`encoders.py`) -> backbone (`backbones.py`: Mega / Mega-chunk / Transformer)
-> masked mean pooling and classifier head (`heads.py`), assembled by `lra_classifier.py`.
"""

from mega_lra.models.backbones import MegaBackbone, TransformerBackbone
from mega_lra.models.encoders import RealNumberEncoder, TokenEncoder
from mega_lra.models.heads import ClassifierHead, masked_mean_pool
from mega_lra.models.lra_classifier import (
    LRAClassifier,
    MegaClassifier,
    TransformerClassifier,
    count_parameters,
)

__all__ = [
    "ClassifierHead",
    "LRAClassifier",
    "MegaBackbone",
    "MegaClassifier",
    "RealNumberEncoder",
    "TokenEncoder",
    "TransformerBackbone",
    "TransformerClassifier",
    "count_parameters",
    "masked_mean_pool",
]
