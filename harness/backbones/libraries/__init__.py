"""One record per model library: how a backbone of it is built, where its preprocessing
comes from, which files its hub repos publish, which part embeds images, which blocks
``partial:N`` unfreezes, whether it has a text tower, and which distribution's version
goes into keys. cell.py, suite.py, finetune.py and the backbone layer ask here, never
``spec.source``.

Each module of this package registers one ``Library`` when the package is imported, so a
new library (Hugging Face transformers, say) is one new module here; a suite names it
``library = "NAME"`` (with ``model = "..."``) in a ``[backbones.NAME]`` table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.files import ResolvedWeights
from harness.errors import SuiteError
from harness.imports import import_frozen
from harness.registry import Registry, import_modules

if TYPE_CHECKING:
    import torch

# (built model, spec, its weights, device) -> prompts -> L2-normalised text embeddings
TextEncoder = Callable[[Any, BackboneSpec, ResolvedWeights, str], Callable[[list[str]], Any]]
Builder = Callable[[BackboneSpec, ResolvedWeights, bool], "torch.nn.Module"]


def _itself(model: Any) -> Any:
    return model


@dataclass(frozen=True)
class Library:
    """A model library. ``build(spec, weights, head)``: the model in eval mode, whose
    forward gives the embedding (or logits with ``head``); ``preprocess(spec)``: its
    pretrained preprocessing, for a declared entry (None where the table says it);
    ``preprocess_key(spec)``: what else that preprocessing depends on (a config file);
    ``hub_files``: the weight files its hub repos hold, in the order tried;
    ``distributions``: the packages whose versions change what its models compute (they
    key every embedding it makes; the first keys its preprocessing); ``modules``: what
    ``build`` and ``preprocess`` import (``load`` imports them frozen); ``image_model``:
    the module that embeds images (the one fine-tuning trains); ``unfreeze``: its last N
    blocks and what follows them (None where blocks are unknown); ``text``: its text
    tower's encoder (zero-shot); ``pooling``: a declared entry's default; ``runs_model``:
    False for precomputed vectors, which only strategies on embeddings judge."""

    name: str
    build: Builder | None = field(repr=False)
    preprocess: Callable[[BackboneSpec], Preprocess] | None = field(default=None, repr=False)
    preprocess_key: Callable[[BackboneSpec], dict[str, Any]] = field(
        default=lambda spec: {}, repr=False
    )
    hub_files: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    image_model: Callable[[Any], Any] = field(default=_itself, repr=False)
    unfreeze: Callable[[Any, BackboneSpec, int], None] | None = field(default=None, repr=False)
    text: TextEncoder | None = field(default=None, repr=False)
    pooling: str = "default"
    runs_model: bool = True


LIBRARIES: Registry[Library] = Registry("model library", SuiteError)


def library(spec: BackboneSpec) -> Library:
    return LIBRARIES.get(spec.source)


def load(spec: BackboneSpec) -> Library:
    """The backbone's library, its modules imported (``harness.imports``): for calling
    ``build`` or ``preprocess``."""
    lib = library(spec)
    import_frozen(*lib.modules)
    return lib


def has_text(spec: BackboneSpec) -> bool:
    """Whether the backbone has a text tower (zero-shot; the ``clip`` marker)."""
    return library(spec).text is not None


def check_blocks(spec: BackboneSpec, blocks: int, available: int) -> None:
    if not 1 <= blocks <= available:
        raise SuiteError(
            f"partial:{blocks}: {spec.name} has {available} blocks; use 1..{available}"
        )


import_modules(__name__, __path__)
LIBRARIES.freeze()
