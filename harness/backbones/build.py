"""Instantiate a backbone as a torch module (imports torch and timm lazily)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.backbones.base import BackboneSpec
from harness.backbones.convert import CONVERTERS
from harness.backbones.weights import ResolvedWeights
from harness.errors import WeightsError

if TYPE_CHECKING:
    import torch


def _timm(spec: BackboneSpec, weights: ResolvedWeights) -> torch.nn.Module:
    import timm
    import torch

    if weights.path is None:
        torch.manual_seed(spec.weights.seed)
        return timm.create_model(spec.model, pretrained=False)
    model = timm.create_model(spec.model, pretrained=False)
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    if spec.weights.convert:
        state = CONVERTERS[spec.weights.convert](state, list(model.state_dict()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise WeightsError(
            f"weights for {spec.name} ({weights.path}) do not fit timm's {spec.model}: {first}"
        ) from None
    return model


SOURCES: dict[str, Callable[[BackboneSpec, ResolvedWeights], torch.nn.Module]] = {
    "timm": _timm,
}


def build_model(
    spec: BackboneSpec, weights: ResolvedWeights, head: bool = False
) -> torch.nn.Module:
    """The backbone in eval mode; headless (pooled embeddings) unless ``head`` is True."""
    try:
        make = SOURCES[spec.source]
    except KeyError:
        raise WeightsError(f"{spec.name}: unknown source {spec.source!r}") from None
    model = make(spec, weights)
    if not head:
        model.reset_classifier(0)
    if model.num_features != spec.embed_dim:
        raise WeightsError(
            f"{spec.name}: the model gives {model.num_features}-d embeddings but the registry "
            f"entry says {spec.embed_dim}; fix the entry"
        )
    return model.eval()
