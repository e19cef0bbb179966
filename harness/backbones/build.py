"""Instantiate a backbone as a torch module whose forward gives the embedding (torch, timm
and open_clip are imported here, lazily, never at collection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backbones.base import BackboneSpec
from harness.backbones.convert import CONVERTERS
from harness.backbones.weights import OPEN_CLIP_CONFIG, ResolvedWeights
from harness.errors import WeightsError, blame

if TYPE_CHECKING:
    import torch

CONFIGS = Path(__file__).with_name("configs")


def own_config(model: str) -> Path | None:
    """shelfbench's own open_clip config for ``model`` (its tiny test models), if any."""
    path = CONFIGS / f"{model}.json"
    return path if path.is_file() else None


def load_state(path: Path) -> dict[str, Any]:
    """A state dict from safetensors or a weights-only torch file: never arbitrary pickles."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; all mean the same here
        raise WeightsError(
            f"{path} is not a weights-only checkpoint ({type(exc).__name__}); "
            "shelfbench loads only tensors, never arbitrary pickled objects"
        ) from None


def _strict(model: torch.nn.Module, state: dict[str, Any], spec: BackboneSpec, path: Path) -> None:
    """Load every key or fail naming the first that does not fit."""
    where = f"weights for {spec.name} ({path}) do not fit {spec.identifier}"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape mismatch raises even when not strict
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("size mismatch")), lines[0])
        raise WeightsError(f"{where}: {first}") from None
    problems = [f"missing key {k!r}" for k in result.missing_keys]
    problems += [f"unexpected key {k!r}" for k in result.unexpected_keys]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise WeightsError(f"{where}: {problems[0]}{more}")


def _timm(spec: BackboneSpec, weights: ResolvedWeights, head: bool) -> torch.nn.Module:
    import timm
    import torch

    classes = {} if head else {"num_classes": 0}
    overrides = dict(spec.overrides)
    if "pooling" in overrides:
        classes["global_pool"] = overrides["pooling"]
    if weights.path is None:
        torch.manual_seed(spec.weights.seed)
        return timm.create_model(spec.model, pretrained=False, **classes)
    if spec.weights.source == "file":
        return _team_checkpoint(spec, weights.path, classes)
    if spec.weights.convert:
        model = timm.create_model(spec.model, pretrained=False)
        state = CONVERTERS[spec.weights.convert](load_state(weights.path), list(model.state_dict()))
        _strict(model, state, spec, weights.path)
        if not head:
            model.reset_classifier(0)
        return model
    # timm's own loader, as for a download: weights-only load, its checkpoint filters,
    # and the classifier dropped when num_classes=0.
    return timm.create_model(
        spec.model, pretrained=True, **classes, pretrained_cfg_overlay={"file": str(weights.path)}
    )


def _team_checkpoint(spec: BackboneSpec, path: Path, classes: dict[str, Any]) -> torch.nn.Module:
    """A team's own checkpoint of a timm model, loaded strictly (the first key that does
    not fit is the error) after unwrapping ``state_dict``/``model`` and DDP's ``module.``,
    with its classification head dropped whatever its number of classes, as timm drops a
    pretrained head; a headless checkpoint loads as it is."""
    import timm

    model = timm.create_model(spec.model, pretrained=False, **classes)
    state = _unwrapped(load_state(path))
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    if classes.get("num_classes") == 0:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}
    _strict(model, state, spec, path)
    return model


def _unwrapped(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint's state dict: ``{"state_dict": ...}`` or ``{"model": ...}``
    unwrapped and DDP's ``module.`` prefix removed."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _module(spec: BackboneSpec, weights: ResolvedWeights, head: bool) -> torch.nn.Module:
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
        _strict(model, _unwrapped(load_state(weights.path)), spec, weights.path)
    if not hasattr(model, "num_features"):
        size = spec.preprocess.size if spec.preprocess else 224
        with torch.no_grad():
            model.num_features = int(model.eval()(torch.zeros(1, 3, size, size)).shape[-1])
    return model


def image_tower(model: Any) -> torch.nn.Module:
    """An open_clip model as a module whose forward gives normalised image embeddings."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model
            self.num_features = model.visual.output_dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_image(x, normalize=True)

    return ImageTower()


def open_clip_model(spec: BackboneSpec, weights: ResolvedWeights) -> Any:
    """The whole open_clip model (image and text towers), weights loaded.

    A local file gets what the hub tag would have given: QuickGELU from the registry entry,
    and the entry's preprocessing (applied by shelfbench, not by open_clip's transforms).
    """
    import open_clip
    import torch

    if own := own_config(spec.model):
        open_clip.add_model_config(own)
    if spec.model.startswith("hf-hub:"):
        if weights.path is None:
            raise WeightsError(f"{spec.name}: an hf-hub model needs its directory")
        _check_hf_preprocess(spec, weights.path / OPEN_CLIP_CONFIG)
        return open_clip.create_model(f"local-dir:{weights.path}")
    torch.manual_seed(spec.weights.seed)
    # open_clip's own file loader (weights-only torch.load or safetensors, strict), as
    # for a download; QuickGELU must be forced, a file does not carry the tag's flag.
    return open_clip.create_model(
        spec.model,
        pretrained=None if weights.path is None else str(weights.path),
        force_quick_gelu=spec.quick_gelu,
    )


def _check_hf_preprocess(spec: BackboneSpec, config_path: Path) -> None:
    """An hf-hub entry's preprocessing is declared from its model card; the model's own
    open_clip_config.json has the last word."""
    cfg = json.loads(config_path.read_text()).get("preprocess_cfg", {})
    pre = spec.preprocess
    expected = {
        "mean": list(pre.mean),
        "std": list(pre.std),
        "interpolation": pre.interpolation,
        "resize_mode": pre.resize,
    }
    differs = {k: cfg[k] for k, v in expected.items() if k in cfg and _plain(cfg[k]) != v}
    if differs:
        raise WeightsError(
            f"{spec.name}: the registry's preprocessing differs from "
            f"{config_path}: {differs}; fix the entry in harness/backbones/zoo.py"
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def _open_clip(spec: BackboneSpec, weights: ResolvedWeights, head: bool) -> torch.nn.Module:
    if head:
        raise WeightsError(f"{spec.name} is an open_clip model: it has no classifier head")
    return image_tower(open_clip_model(spec, weights))


SOURCES: dict[str, Callable[[BackboneSpec, ResolvedWeights, bool], torch.nn.Module]] = {
    "timm": _timm,
    "open_clip": _open_clip,
    "module": _module,
}


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
        model = SOURCES[spec.source](spec, weights, head)
    if spec.embed_dim and model.num_features != spec.embed_dim:
        raise WeightsError(
            f"{spec.name}: the model gives {model.num_features}-d embeddings but the registry "
            f"entry says {spec.embed_dim}; fix the entry"
        )
    return model.eval()
