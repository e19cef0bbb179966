"""Embeddings of a dataset split by a backbone, through the cache: a hit loads no model."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.files import ResolvedWeights
from harness.backbones.libraries import library
from harness.backbones.weights import resolve
from harness.cache import EMBEDDING_VERSION, Batches, CacheEntry
from harness.datasets.base import Dataset
from harness.errors import WeightsError, blame
from harness.extract import embed_batches, text_batches
from harness.provenance import versions
from harness.runtime import device
from harness.vectors import VECTORS_VERSION, changed_since_last_read, vectors_for

if TYPE_CHECKING:
    import torch

# What every embedding is computed with, whatever the library: torch runs the model,
# Pillow decodes and resizes (the library's own packages come from its record).
EXTRACTION = ("torch", "pillow")


@dataclass(frozen=True)
class Checkpoint:
    """Fine-tuned weights to load over the backbone's own: the run that made them (a cache
    key digest), the file and its sha256."""

    run: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Embedded:
    """Embeddings of the items ``indices`` of one split, with their labels. ``seconds`` is
    this call's wall time; ``cost_seconds`` what computing them took, hit or miss."""

    vectors: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    ids: np.ndarray | None
    query: np.ndarray | None
    computed: int
    seconds: float
    key: dict[str, object]
    cost_seconds: float
    notes: tuple[str, ...] = ()  # what a reader should know of them (a vectors table's)


def model_key(spec: BackboneSpec, weights: ResolvedWeights, device: str) -> dict[str, object]:
    """The model side of every cache key, image or text: which weights, run how."""
    return {
        "embedding_version": EMBEDDING_VERSION,
        "backbone": spec.name,
        "identifier": spec.identifier,
        "quick_gelu": spec.quick_gelu,
        "weights_sha256": weights.sha256,
        "device": device,
        "libraries": versions((*EXTRACTION, *library(spec).distributions)),
    }


def embedding_key(
    dataset: Dataset,
    split: str,
    spec: BackboneSpec,
    weights: ResolvedWeights,
    pre: Preprocess,
    device: str,
    checkpoint: Checkpoint | None = None,
    precision: str = "fp32",
) -> dict[str, object]:
    tuned = {} if checkpoint is None else {"finetune": [checkpoint.run, checkpoint.sha256]}
    return {
        **model_key(spec, weights, device),
        **tuned,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "source": spec.source,
        "pooling": spec.pooling,
        "preprocess": pre.as_dict(),
        "precision": precision,
    }


def load_model(
    spec: BackboneSpec, weights: ResolvedWeights, checkpoint: Checkpoint | None = None
) -> torch.nn.Module:
    """The backbone, with fine-tuned weights from ``checkpoint`` if given; the last two
    built are kept, so a zero-shot cell's image and text towers are one model."""
    return _load_model(spec, weights, checkpoint)  # one key, however it was called


@lru_cache(maxsize=2)
def _load_model(
    spec: BackboneSpec, weights: ResolvedWeights, checkpoint: Checkpoint | None
) -> torch.nn.Module:
    from harness.backbones.build import build_model

    model = build_model(spec, weights)
    if checkpoint is not None:
        import torch

        with blame(f"fine-tuned weights {checkpoint.path} for {spec.name}", WeightsError):
            state = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
    return model


def embed(
    dataset: Dataset,
    split: str,
    indices: np.ndarray,
    spec: BackboneSpec,
    pre: Preprocess | None,
    batch_size: int,
    cache_root: Path,
    checkpoint: Checkpoint | None = None,
    precision: str = "fp32",
    lock: str = "lock",
) -> Embedded:
    """Embeddings for ``indices`` of ``split`` (by the backbone fine-tuned as ``checkpoint``
    says, if given) at ``precision`` (resolved: fp32, bf16 or tf32), computing only the
    rows not yet cached. ``lock`` names the entry's lock file: processes that fill
    disjoint rows (``harness.shard``'s ranks) may each take their own."""
    weights = resolve(spec)
    if not library(spec).runs_model:
        return embed_vectors(dataset, split, indices, spec, weights, cache_root)
    assert pre is not None  # a library that runs a model has preprocessing
    data = dataset.split(split)
    key = embedding_key(dataset, split, spec, weights, pre, device(), checkpoint, precision)
    entry = CacheEntry(cache_root, key, len(data), lock)
    start = time.perf_counter()
    tuned = "" if checkpoint is None else " (fine-tuned)"
    desc = f"embed {dataset.name}/{split} with {spec.name}{tuned}"

    def produce(rows: np.ndarray) -> Batches:
        model = load_model(spec, weights, checkpoint)
        return embed_batches(model, data, rows, pre, batch_size, desc, precision)

    got = entry.get(indices, produce)
    return Embedded(
        got.vectors,
        data.labels[indices],
        indices,
        None if data.ids is None else data.ids[indices],
        None if data.query is None else data.query[indices],
        got.computed,
        time.perf_counter() - start,
        entry.key,
        got.seconds_per_item * len(indices),
    )


def embed_vectors(
    dataset: Dataset,
    split: str,
    indices: np.ndarray,
    spec: BackboneSpec,
    weights: ResolvedWeights,
    cache_root: Path,
) -> Embedded:
    """A vectors backbone's rows for ``indices`` (``harness.vectors``): nothing to compute;
    the table's sha256 stands for the weights in the key and the row."""
    start = time.perf_counter()
    path = str(weights.path)
    note = changed_since_last_read(path, weights.sha256, cache_root)
    vectors, notes = vectors_for(dataset, split, indices, path, weights.sha256, spec.name)
    data = dataset.split(split)
    key: dict[str, object] = {
        "vectors_version": VECTORS_VERSION,
        "backbone": spec.name,
        "weights_sha256": weights.sha256,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "precision": "vectors",
        "preprocess": {},
    }
    return Embedded(
        vectors,
        data.labels[indices],
        indices,
        None if data.ids is None else data.ids[indices],
        None if data.query is None else data.query[indices],
        0,
        time.perf_counter() - start,
        key,
        0.0,
        tuple(n for n in (note, *notes) if n),
    )


def embed_texts(
    spec: BackboneSpec, prompts: list[str], cache_root: Path, precision: str = "fp32"
) -> np.ndarray:
    """Normalised text-tower embeddings of ``prompts`` (backbones whose adapter has a text
    encoder) at ``precision``, as the cell's images, cached like them under a key of the
    backbone, its weights, the precision and the exact prompts."""
    weights = resolve(spec)
    key = {
        **model_key(spec, weights, device()),
        "kind": "text",
        "precision": precision,
        "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
    }
    entry = CacheEntry(cache_root, key, len(prompts))

    def produce(rows: np.ndarray) -> Batches:
        encode = library(spec).text
        assert encode is not None  # callers check has_text(spec)
        model = load_model(spec, weights)
        desc = f"embed prompts with {spec.name}"
        with blame(f"the text tower of {spec.name} ({spec.identifier})", WeightsError):
            encoder = encode(model, spec, weights, device())
        return text_batches(encoder, prompts, rows, desc, precision)

    return entry.get(np.arange(len(prompts)), produce).vectors
