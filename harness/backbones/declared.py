"""Backbones a team declares without editing the package: a suite file's
``[backbones.NAME]`` tables, and entries an installed package registers through the
``shelfbench.backbones`` entry-point group.

A declared backbone names its library's model (``timm = "vit_small_patch16_224"``,
``open_clip = "ViT-B-32"``, or a team's own factory ``module = "pkg.encoders:build"``,
which returns a ``torch.nn.Module`` whose forward gives the embedding and declares its
preprocessing) and where its weights are: a file beside the suite
(``weights = "models/v2.safetensors"``), a Hugging Face repo read from the local cache
(``hf_hub = "org/repo"``), or ``weights = "random"``. Preprocessing comes from the
library's pretrained config when the model runs (never at collection, which imports no
model library); ``image_size``, ``crop_pct``, ``mean``, ``std``, ``interpolation`` and
``pooling`` override it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from harness.backbones.base import (
    BACKBONES,
    BackboneSpec,
    Family,
    Interpolation,
    Kind,
    Preprocess,
    Weights,
)
from harness.backbones.libraries import LIBRARIES, library, load
from harness.cache import digest, keep
from harness.errors import SuiteError
from harness.paths import cache_root, regular_file
from harness.provenance import version
from harness.settings import CropPct, ImageSize, Name, Positive, Says, Table, Unit

ENTRY_POINTS = "shelfbench.backbones"
SOURCES = ("timm", "open_clip", "module", "vectors")
PREPROCESSING = ("image_size", "crop_pct", "mean", "std", "interpolation", "pooling")


def _repo_id(value: str) -> str:
    """A Hugging Face repo id, as huggingface_hub itself checks one."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        raise ValueError(str(exc)) from None
    return value


RepoId = Annotated[str, AfterValidator(_repo_id), Says("a Hugging Face repo id, 'org/name'")]
# timm's global_pool choices (SelectAdaptivePool2d for CNNs; ViTs add token and map).
Pooling = Literal["avg", "max", "avgmax", "catavgmax", "token", "map"]
Channels = Annotated[tuple[Unit, Unit, Unit], Field(strict=False)]


class BackboneTable(Table):
    """A ``[backbones.NAME]`` table as written in a suite file: the model (one of
    ``timm``, ``open_clip``, ``module``, ``vectors``, or any registered library as
    ``library`` and ``model``), its weights (``weights``: a file relative to the suite, or
    "random"; or ``hf_hub``), and overrides of its library's preprocessing."""

    timm: Name | None = None
    open_clip: Name | None = None
    vectors: Name | None = None  # a Parquet table of id and vector: embeddings a team has
    module: (
        Annotated[str, Field(pattern=r"^[\w.]+:\w+$"), Says("'package.module:function'")] | None
    ) = None
    library: Name | None = None  # another registered model library (with model = ...)
    model: Name | None = None
    pretrained: str = ""
    weights: Name | None = None
    hf_hub: RepoId | None = None
    family: Family = "supervised"
    kind: Kind | None = None
    image_size: ImageSize | None = None
    crop_pct: CropPct | None = None
    mean: Annotated[Channels, Says("three numbers in [0, 1], one per channel")] | None = None
    std: (
        Annotated[
            tuple[Positive, Positive, Positive],
            Field(strict=False),
            Says("three numbers > 0, one per channel"),
        ]
        | None
    ) = None
    interpolation: Interpolation | None = None
    pooling: Pooling | None = None

    @model_validator(mode="after")
    def _one_model_and_weights(self) -> BackboneTable:
        sources = [s for s in (*SOURCES, "library") if getattr(self, s)]
        if len(sources) != 1 or (self.library is None) != (self.model is None):
            raise ValueError(
                "names its model with one of timm = '...', open_clip = '...', "
                "module = 'package.module:function', vectors = 'embeddings.parquet', or "
                "library = '...' with model = '...'"
            )
        if sources == ["vectors"]:
            given = [
                k for k in ("weights", "hf_hub", *PREPROCESSING) if getattr(self, k) is not None
            ]
            if given:
                raise ValueError(
                    f"vectors are embeddings already made: {given[0]} has no meaning for them"
                )
            return self
        weights = self.weights is not None or (sources == ["module"] and self.hf_hub is None)
        if weights == (self.hf_hub is not None):
            raise ValueError(
                "needs exactly one of weights = 'path/to/file.safetensors' (or 'random') "
                "and hf_hub = 'org/repo'"
            )
        return self


def declared_backbone(name: str, table: BackboneTable, suite: Path) -> BackboneSpec:
    """The registry entry for ``suite``'s ``[backbones.NAME]`` (paths relative to it). A
    weights (or vectors) file that exists must be a regular file; a missing one skips
    its cells."""
    where = f"[backbones.{name}]"
    named = [s for s in SOURCES if getattr(table, s)]
    source, model = (named[0], getattr(table, named[0])) if named else (table.library, table.model)
    assert source is not None and model is not None  # BackboneTable's validator
    if source == "vectors":
        return _vectors_backbone(name, table, suite)
    if source not in LIBRARIES:
        raise SuiteError(
            f"{where} library = {source!r}: no such model library; there are "
            f"{', '.join(LIBRARIES.names())}"
        )
    kind = table.kind or ("vit" if "vit" in model.lower() else "cnn")
    if table.weights in (None, "random") and table.hf_hub is None:
        weights = Weights(source="random")
    elif table.weights is not None:
        path = (suite.parent / table.weights).resolve()
        if path.exists():
            regular_file(path, f"{where} weights", SuiteError)
        weights = Weights(source="file", files=(str(path),))
    else:
        weights = Weights(source="hub", hf_repo=str(table.hf_hub))
    overrides = {
        key: value
        for key in ("image_size", "crop_pct", "mean", "std", "interpolation", "pooling")
        if (value := getattr(table, key)) is not None
    }
    preprocess = None  # from the library's config, at run time
    if source == "module":
        preprocess = _module_preprocess(where, table)
    return BackboneSpec(
        name=name,
        family=table.family,
        kind=kind,
        source=source,
        model=model,
        weights=weights,
        preprocess=preprocess,
        embed_dim=0,
        pooling=table.pooling or LIBRARIES.get(str(source)).pooling,
        pretrained=table.pretrained,
        notes="declared in a suite file",
        overrides=tuple(sorted(overrides.items())),
        suite=str(suite),
    )


def _vectors_backbone(name: str, table: BackboneTable, suite: Path) -> BackboneSpec:
    """A team's precomputed embeddings: the table stands for the weights (its sha256 is in
    the key and the row); no model, so no preprocessing."""
    path = (suite.parent / str(table.vectors)).resolve()
    if path.exists():
        regular_file(path, f"[backbones.{name}] vectors", SuiteError)
    return BackboneSpec(
        name=name,
        family=table.family,
        kind="vectors",
        source="vectors",
        model=str(path),
        weights=Weights(source="file", files=(str(path),)),
        preprocess=None,
        embed_dim=0,
        pooling="precomputed",
        notes="precomputed embeddings declared in a suite file",
        suite=str(suite),
    )


def _module_preprocess(where: str, table: BackboneTable) -> Preprocess:
    """A module entry's preprocessing: no library says it, so the table must."""
    if table.image_size is None or table.mean is None or table.std is None:
        raise SuiteError(
            f"{where}: a module entry declares its preprocessing: image_size, mean and std "
            "(and optionally crop_pct, default 1.0, and interpolation, default bicubic)"
        )
    return Preprocess(
        table.image_size,
        table.interpolation or "bicubic",
        mean=tuple(table.mean),  # type: ignore[arg-type]
        std=tuple(table.std),  # type: ignore[arg-type]
        crop_pct=1.0 if table.crop_pct is None else table.crop_pct,
    )


@functools.cache
def entry_point_backbones() -> dict[str, BackboneSpec]:
    """What installed packages offer in the ``shelfbench.backbones`` group, by name: each
    entry point is a ``BackboneSpec`` or a list of them (a name no built-in holds)."""
    found: dict[str, BackboneSpec] = {}
    for point in entry_points(group=ENTRY_POINTS):
        try:
            offered = point.load()
        except Exception as exc:  # a team's package may fail in any way; say which
            raise SuiteError(
                f"entry point {point.name!r} ({point.value}) in {ENTRY_POINTS} failed to "
                f"load: {type(exc).__name__}: {exc}"
            ) from None
        specs = offered if isinstance(offered, list | tuple) else [offered]
        for spec in specs:
            if not isinstance(spec, BackboneSpec):
                raise SuiteError(
                    f"entry point {point.name!r} ({point.value}) gives {type(spec).__name__}, "
                    "not a harness.backbones.BackboneSpec"
                )
            if spec.name in BACKBONES or spec.name in found:
                raise SuiteError(
                    f"entry point {point.name!r} ({point.value}) offers backbone "
                    f"{spec.name!r}, which is registered already; give it another name"
                )
            found[spec.name] = spec
    return found


def complete(spec: BackboneSpec) -> BackboneSpec:
    """The entry with its preprocessing filled from its library's pretrained config and the
    table's overrides (imports timm or open_clip); registry entries come complete."""
    if spec.preprocess is not None:
        return spec
    overrides: dict[str, Any] = dict(spec.overrides)  # checked by BackboneTable
    pre = library_preprocess(spec)
    pre = replace(
        pre,
        size=overrides.get("image_size", pre.size),
        crop_pct=overrides.get("crop_pct", pre.crop_pct),
        mean=overrides.get("mean", pre.mean),
        std=overrides.get("std", pre.std),
        interpolation=overrides.get("interpolation", pre.interpolation),
    )
    return replace(spec, preprocess=pre)


def library_preprocess(spec: BackboneSpec) -> Preprocess:
    """The library's pretrained preprocessing for ``spec``, remembered under the cache per
    library version, so that a run whose embeddings are all cached never imports timm or
    open_clip (7 of the 10 s of a warm zero-shot cell). A remembered file whose key does
    not match, or that cannot be read, is recomputed."""
    lib = library(spec)
    assert lib.preprocess is not None  # declared entries of libraries without one say it
    key = {
        "source": spec.source,
        "model": spec.model,
        "pretrained": spec.pretrained,
        "version": version(lib.distributions[0]),
        **lib.preprocess_key(spec),
    }
    path = cache_root() / "library-preprocess" / f"{digest(key)}.json"
    try:
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in saved["preprocess"].items()
            }
            return Preprocess(**fields)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    load(spec)  # its modules, frozen
    pre = lib.preprocess(spec)
    text = json.dumps({"key": key, "preprocess": pre.as_dict()}, indent=1)
    keep(path, lambda p: p.write_text(text))
    return pre
