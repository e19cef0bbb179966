"""timm: models by their ``architecture.tag``, built by timm (its own loader for hub and
package weights, a strict load for a team's checkpoint), preprocessing from the
pretrained config, ``partial:N`` by timm's coarse parameter groups."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backbones.base import INTERPOLATIONS, BackboneSpec, Preprocess, channels
from harness.backbones.checkpoints import load_state, strict, uninitialised, unwrapped
from harness.backbones.convert import CONVERTERS
from harness.backbones.files import ResolvedWeights
from harness.backbones.libraries import LIBRARIES, Library, check_blocks
from harness.errors import SuiteError

if TYPE_CHECKING:
    import torch


def build(spec: BackboneSpec, weights: ResolvedWeights, head: bool) -> torch.nn.Module:
    import timm
    import torch

    classes: dict[str, Any] = {} if head else {"num_classes": 0}
    overrides = dict(spec.overrides)
    if "pooling" in overrides:
        classes["global_pool"] = overrides["pooling"]
    if weights.path is None:
        torch.manual_seed(spec.weights.seed)
        return timm.create_model(spec.model, pretrained=False, **classes)
    if spec.weights.source == "file":
        return team_checkpoint(spec, weights.path, classes)
    if spec.weights.convert:
        with uninitialised():  # the strict load below overwrites every value
            model: Any = timm.create_model(spec.model, pretrained=False)
        state = CONVERTERS[spec.weights.convert](load_state(weights.path), list(model.state_dict()))
        strict(model, state, spec, weights.path)
        if not head:
            model.reset_classifier(0)
        return model
    # timm's own loader, as for a download: weights-only load, its checkpoint filters,
    # and the classifier dropped when num_classes=0.
    return timm.create_model(
        spec.model, pretrained=True, **classes, pretrained_cfg_overlay={"file": str(weights.path)}
    )


def team_checkpoint(spec: BackboneSpec, path: Path, classes: dict[str, Any]) -> torch.nn.Module:
    """A team's own checkpoint of a timm model, loaded strictly (the first key that does
    not fit is the error) after unwrapping ``state_dict``/``model`` and DDP's ``module.``,
    with its classification head dropped whatever its number of classes, as timm drops a
    pretrained head; a headless checkpoint loads as it is."""
    import timm

    with uninitialised():  # the strict load below overwrites every value
        model: Any = timm.create_model(spec.model, pretrained=False, **classes)
    state = unwrapped(load_state(path))
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    if classes.get("num_classes") == 0:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}
    strict(model, state, spec, path)
    return model


def preprocess(spec: BackboneSpec) -> Preprocess:
    import timm
    from timm.models import get_pretrained_cfg

    architecture = spec.model.partition(".")[0]
    if architecture not in timm.list_models():
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        raise SuiteError(
            f"backbone {spec.name}: timm has no model {spec.model!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    cfg = get_pretrained_cfg(spec.model) or get_pretrained_cfg(architecture)
    size = cfg.input_size[-1] if cfg else 224
    interpolation = cfg.interpolation if cfg and cfg.interpolation in INTERPOLATIONS else "bicubic"
    return Preprocess(
        size,
        interpolation,
        mean=channels(cfg.mean) if cfg else (0.485, 0.456, 0.406),
        std=channels(cfg.std) if cfg else (0.229, 0.224, 0.225),
        crop_pct=cfg.crop_pct if cfg else 0.875,
    )


def unfreeze(model: Any, spec: BackboneSpec, blocks: int) -> None:
    """timm's coarse parameter groups (those of its layer-wise decay): group 0 is the stem,
    and what follows the last block is folded into its group."""
    from timm.models import group_parameters

    groups = list(group_parameters(model, model.group_matcher(coarse=True)).values())
    check_blocks(spec, blocks, len(groups) - 1)
    names = {n for group in groups[-blocks:] for n in group}
    for name, p in model.named_parameters():
        p.requires_grad = name in names


LIBRARIES.add(
    Library(
        "timm",
        build,
        preprocess,
        hub_files=("model.safetensors", "pytorch_model.bin"),
        distributions=("timm", "torchvision"),
        modules=("torch", "timm"),
        unfreeze=unfreeze,
    )
)
