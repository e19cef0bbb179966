"""Backbones: one declarative registry entry each. Importing this package registers them."""

from harness.backbones import zoo
from harness.backbones.base import BACKBONES, BackboneSpec, Preprocess, Weights
from harness.backbones.weights import ResolvedWeights, resolve

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Preprocess",
    "ResolvedWeights",
    "Weights",
    "resolve",
    "zoo",
]
