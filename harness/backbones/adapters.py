"""What differs between model libraries once a backbone is built, in one place: which part
of the model embeds images, which blocks ``partial:N`` unfreezes, and whether it has a
text tower. cell.py, suite.py, plugin.py and finetune.py ask here, never ``spec.source``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.backbones.base import BackboneSpec
from harness.backbones.weights import ResolvedWeights
from harness.errors import SuiteError

if TYPE_CHECKING:
    import torch


# (built model, spec, its weights, device) -> prompts -> L2-normalised text embeddings
TextEncoder = Callable[[Any, BackboneSpec, ResolvedWeights, str], Callable[[list[str]], Any]]


@dataclass(frozen=True)
class Adapter:
    """One model library: ``image_model`` (the module that embeds images, the one
    fine-tuning trains), ``unfreeze`` (its last N blocks and what follows them, given
    the built model; None where blocks are unknown), ``text`` (its text tower's
    encoder, for zero-shot; None where it has none) and ``runs_model`` (False for
    precomputed vectors: only strategies on embeddings judge them)."""

    image_model: Callable[[Any], Any]
    unfreeze: Callable[[Any, BackboneSpec, int], None] | None
    text: TextEncoder | None = None
    runs_model: bool = True  # False: precomputed vectors, no model to run or train


def _check(spec: BackboneSpec, blocks: int, available: int) -> None:
    if not 1 <= blocks <= available:
        raise SuiteError(
            f"partial:{blocks}: {spec.name} has {available} blocks; use 1..{available}"
        )


def _timm_unfreeze(model: torch.nn.Module, spec: BackboneSpec, blocks: int) -> None:
    """timm's coarse parameter groups (those of its layer-wise decay): group 0 is the stem,
    and what follows the last block is folded into its group."""
    from timm.models import group_parameters

    groups = list(group_parameters(model, model.group_matcher(coarse=True)).values())
    _check(spec, blocks, len(groups) - 1)
    names = {n for group in groups[-blocks:] for n in group}
    for name, p in model.named_parameters():
        p.requires_grad = name in names


def _open_clip_unfreeze(model: Any, spec: BackboneSpec, blocks: int) -> None:
    """open_clip's own lock on a ViT tower: its groups are the stem, each residual block
    and the projection, the last block's group also holding the final norm."""
    image = model.clip.visual
    if not hasattr(image, "transformer"):
        raise SuiteError(f"partial:{blocks}: {spec.name}'s image tower is not a ViT")
    _check(spec, blocks, len(image.transformer.resblocks))
    image.lock(unlocked_groups=blocks + 1)


def _open_clip_text(
    tower: Any, spec: BackboneSpec, weights: ResolvedWeights, dev: str
) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's tokenizer for the model (from its local folder for an hf-hub model) and
    its text tower on ``dev``."""
    import open_clip

    name = f"local-dir:{weights.path}" if spec.model.startswith("hf-hub:") else spec.model
    tokenizer = open_clip.get_tokenizer(name)
    model = tower.clip.to(dev)
    return lambda prompts: model.encode_text(tokenizer(prompts).to(dev), normalize=True)


ADAPTERS = {
    "timm": Adapter(image_model=lambda model: model, unfreeze=_timm_unfreeze),
    "open_clip": Adapter(
        image_model=lambda tower: tower.clip.visual,
        unfreeze=_open_clip_unfreeze,
        text=_open_clip_text,
    ),
    "module": Adapter(image_model=lambda model: model, unfreeze=None),
    "vectors": Adapter(image_model=lambda model: model, unfreeze=None, runs_model=False),
}


def adapter(spec: BackboneSpec) -> Adapter:
    return ADAPTERS[spec.source]


def has_text(spec: BackboneSpec) -> bool:
    """Whether the backbone has a text tower (zero-shot; the ``clip`` marker)."""
    return adapter(spec).text is not None
