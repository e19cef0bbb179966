"""Instantiate a backbone as a torch module whose forward gives the embedding, by its
library's record (``harness.backbones.libraries``); torch, timm and open_clip are
imported there, lazily, never at collection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.backbones.base import BackboneSpec
from harness.backbones.files import ResolvedWeights
from harness.backbones.libraries import load
from harness.errors import WeightsError, blame

if TYPE_CHECKING:
    import torch


def build_model(
    spec: BackboneSpec, weights: ResolvedWeights, head: bool = False
) -> torch.nn.Module:
    """The backbone in eval mode; its forward gives the embedding (or logits if ``head``)."""
    where = (
        f"backbone {spec.name} ({spec.identifier}, random init)"
        if weights.path is None
        else f"weights for {spec.name} ({weights.path}) do not load into {spec.identifier}"
    )
    with blame(where, WeightsError):  # a factory's TypeError, a loader's own errors
        model = load(spec).build(spec, weights, head)  # type: ignore[misc]
    if spec.embed_dim and model.num_features != spec.embed_dim:
        raise WeightsError(
            f"{spec.name}: the model gives {model.num_features}-d embeddings but the registry "
            f"entry says {spec.embed_dim}; fix the entry"
        )
    return model.eval()


def width(model: torch.nn.Module) -> int:
    """The embedding width of a model ``build_model`` made (its ``num_features``)."""
    n = model.num_features
    assert isinstance(n, int), f"num_features of {type(model).__name__} is {n!r}"
    return n
