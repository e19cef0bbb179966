"""Backbones: one declarative registry entry each. Importing this package registers them."""

from harness.backbones import zoo
from harness.backbones.base import BACKBONES, BackboneSpec, Preprocess, Weights
from harness.backbones.files import ResolvedWeights
from harness.backbones.weights import resolve

BACKBONES.freeze()  # a suite's own backbones live in its catalogue (harness.catalogue)

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Preprocess",
    "ResolvedWeights",
    "Weights",
    "resolve",
    "zoo",
]
