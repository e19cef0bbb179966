"""A team's own encoder: ``module = "package.module:function"``, a factory returning a
``torch.nn.Module`` whose forward gives the embedding; its preprocessing is declared in
the suite table (no library says it), its weights loaded strictly if given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.backbones.base import BackboneSpec
from harness.backbones.checkpoints import load_state, strict, unwrapped
from harness.backbones.files import ResolvedWeights
from harness.backbones.libraries import LIBRARIES, Library
from harness.errors import WeightsError

if TYPE_CHECKING:
    import torch


def build(spec: BackboneSpec, weights: ResolvedWeights, head: bool) -> torch.nn.Module:
    """A team's encoder from its factory ``package.module:function`` (called with no
    arguments, after seeding torch), its weights file loaded strictly if one is given.
    Without a ``num_features`` attribute, the width is read from one forward pass."""
    import importlib

    import torch

    if head:
        raise WeightsError(f"{spec.name} is a module entry: it has no classifier head")
    module_name, _, function = spec.model.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise WeightsError(f"backbone {spec.name}: cannot import {spec.model}: {exc}") from None
    torch.manual_seed(spec.weights.seed)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise WeightsError(
            f"backbone {spec.name}: {spec.model}() returned {type(model).__name__}, not a "
            "torch.nn.Module whose forward gives the embedding"
        )
    if weights.path is not None:
        strict(model, unwrapped(load_state(weights.path)), spec, weights.path)
    if not hasattr(model, "num_features"):
        size = spec.preprocess.size if spec.preprocess else 224
        with torch.no_grad():
            width = int(model.eval()(torch.zeros(1, 3, size, size)).shape[-1])
            setattr(model, "num_features", width)  # noqa: B010
    return model


LIBRARIES.add(Library("module", build, modules=("torch",)))
