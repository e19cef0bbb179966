"""open_clip: models by name (and pretrained tag), image and text towers; preprocessing
from the tag's config; ``partial:N`` by open_clip's own lock on a ViT tower; shelfbench's
own configs (tiny test models) registered with open_clip when used."""

from __future__ import annotations

import contextlib
import difflib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.checkpoints import mapped_loads, uninitialised
from harness.backbones.files import OPEN_CLIP_CONFIG, ResolvedWeights, file_sha256
from harness.backbones.libraries import LIBRARIES, Library, check_blocks
from harness.errors import SuiteError, WeightsError

if TYPE_CHECKING:
    import torch

CONFIGS = Path(__file__).parents[1] / "configs"


def own_config(model: str) -> Path | None:
    """shelfbench's own open_clip config for ``model`` (its tiny test models), if any."""
    path = CONFIGS / f"{model}.json"
    return path if path.is_file() else None


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
    # for a download; QuickGELU must be forced, a file does not carry the tag's flag. A
    # strict load overwrites every initial value; big_vision .npz files load their own way.
    loads_all = weights.path is not None and weights.path.suffix not in (".npz", ".npy")
    with contextlib.ExitStack() as stack:
        if loads_all:
            stack.enter_context(uninitialised())
        if weights.path is not None and zipfile.is_zipfile(weights.path):
            stack.enter_context(mapped_loads())
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
    assert pre is not None  # hf-hub entries are registered with their preprocessing
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


def build(spec: BackboneSpec, weights: ResolvedWeights, head: bool) -> torch.nn.Module:
    if head:
        raise WeightsError(f"{spec.name} is an open_clip model: it has no classifier head")
    return image_tower(open_clip_model(spec, weights))


def preprocess(spec: BackboneSpec) -> Preprocess:
    import open_clip

    if own := own_config(spec.model):
        open_clip.add_model_config(own)
    config = open_clip.get_model_config(spec.model)
    if config is None:
        close = difflib.get_close_matches(spec.model, open_clip.list_models(), n=3)
        raise SuiteError(
            f"backbone {spec.name}: open_clip has no model {spec.model!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    tag = open_clip.get_pretrained_cfg(spec.model, spec.pretrained) if spec.pretrained else {}
    size = config["vision_cfg"]["image_size"]
    return Preprocess(
        size if isinstance(size, int) else size[-1],
        tag.get("interpolation", "bicubic"),
        mean=tuple(tag.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(tag.get("std", open_clip.OPENAI_DATASET_STD)),
        resize="squash" if tag.get("resize_mode") == "squash" else "shortest",
    )


def preprocess_key(spec: BackboneSpec) -> dict[str, Any]:
    """The preprocessing of one of shelfbench's own configs changes with the file."""
    own = own_config(spec.model)
    return {"config_sha256": file_sha256(own) if own else None}


def unfreeze(model: Any, spec: BackboneSpec, blocks: int) -> None:
    """open_clip's own lock on a ViT tower: its groups are the stem, each residual block
    and the projection, the last block's group also holding the final norm."""
    image = model.clip.visual
    if not hasattr(image, "transformer"):
        raise SuiteError(f"partial:{blocks}: {spec.name}'s image tower is not a ViT")
    check_blocks(spec, blocks, len(image.transformer.resblocks))
    image.lock(unlocked_groups=blocks + 1)


def text(
    tower: Any, spec: BackboneSpec, weights: ResolvedWeights, dev: str
) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's tokenizer for the model (from its local folder for an hf-hub model) and
    its text tower on ``dev``."""
    import open_clip

    if own := own_config(spec.model):  # the tokenizer reads it too (a model may be cached)
        open_clip.add_model_config(own)
    name = f"local-dir:{weights.path}" if spec.model.startswith("hf-hub:") else spec.model
    tokenizer = open_clip.get_tokenizer(name)
    model = tower.clip.to(dev)
    return lambda prompts: model.encode_text(tokenizer(prompts).to(dev), normalize=True)


LIBRARIES.add(
    Library(
        "open_clip",
        build,
        preprocess,
        preprocess_key,
        hub_files=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        distributions=("open_clip_torch", "timm", "torchvision"),  # timm: its timm towers
        modules=("torch", "open_clip"),
        image_model=lambda tower: tower.clip.visual,
        unfreeze=unfreeze,
        text=text,
        pooling="encode_image",
    )
)
