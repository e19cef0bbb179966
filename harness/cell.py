"""Run one cell as named stages: context → tune → embeddings → (outcome cache) → strategy
→ index → statistics → row. ``shard.py``, the CLI's ``export`` and ``benchmarks/`` reuse
the stages they need.

A cell whose inputs did not change is not computed again: after the embeddings stage,
the outcome cache (``harness.outcomes``) serves the result it stored, keyed by the
embeddings' content and everything else that decides the metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from harness import cost, index, outcomes, search
from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.declared import complete
from harness.backbones.libraries import has_text, library
from harness.backbones.weights import resolve
from harness.cache import digest
from harness.data_checks import check_classes, drop_unreadable, sanity_warnings, shared_images
from harness.datasets import Dataset, subset
from harness.datasets.base import gallery_split
from harness.embeddings import Embedded, embed, embed_texts
from harness.finetune import Tuned, finetune
from harness.gallery import has_gallery, sample_and_worst
from harness.metrics import METRICS
from harness.provenance import versions
from harness.records import GateSettings, IndexReport, Loss
from harness.row import CellRow
from harness.runtime import device, resolve_precision
from harness.stats import bootstrap_ci, paired_difference, summarise
from harness.strategies import Features, Outcome, StrategySpec, Tuning, parse_strategy
from harness.suite import Cell
from harness.training import Run
from harness.tuner import CellTuner

# Seeds of the train and test subsets differ so the two samples are independent.
SPLIT_SEEDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class CellContext:
    """What a cell resolves once: its backbone, dataset, strategy, tuning, preprocessing
    at the profile's size, and the precision it runs at on this machine."""

    cell: Cell
    cache_root: Path
    spec: BackboneSpec
    dataset: Dataset
    protocol: str
    strategy: StrategySpec
    tuning: Tuning | None
    pre: Preprocess | None
    precision: str


def preprocess(cell: Cell, spec: BackboneSpec) -> Preprocess | None:
    """The backbone's preprocessing (a declared backbone's from its library's config) at
    the cell profile's size and crop; None for precomputed vectors, which read no image."""
    if not library(spec).runs_model:
        return None
    pre = complete(spec).preprocess
    assert pre is not None  # complete() fills it
    return pre.resized(cell.profile.image_size, cell.profile.crop_pct)


def context(cell: Cell, cache_root: Path) -> CellContext:
    """The cell's context. Finding the preprocessing imports the model library the first
    time (seconds of one core); the dataset's checks and the weight file's hash mostly run
    outside the interpreter lock, so they run beside it."""
    spec = cell.backbone_spec
    strategy, tuning = parse_strategy(cell.strategy)
    dataset = cell.dataset_spec
    with ThreadPoolExecutor(2) as pool:
        opened = pool.submit(dataset.open)
        pool.submit(_hash_weights, spec)
        pre = preprocess(cell, spec)
    return CellContext(
        cell,
        cache_root,
        spec,
        opened.result(),
        dataset.protocol,
        strategy,
        tuning,
        pre,
        resolve_precision(cell.profile.precision),
    )


def _hash_weights(spec: BackboneSpec) -> None:
    """Hash the weight file into the memo that ``embed`` then reads; ``embed`` resolves
    the weights again and reports whatever is wrong with them."""
    with contextlib.suppress(Exception):
        resolve(spec)


def items(cell: Cell, dataset: Dataset, split: str) -> np.ndarray:
    """The seeded sample of ``split`` the cell's profile asks for."""
    n = {"train": cell.profile.n_train, "test": cell.profile.n_test}[split]
    return subset(len(dataset.split(split)), n, cell.profile.seed + SPLIT_SEEDS[split])


def tune(ctx: CellContext) -> Tuned | None:
    """Stage tune: the backbone fine-tuned as the strategy says (read if its run is
    cached), on the train sample the profile draws from the tuning dataset (the cell's
    own unless cross-tuning); None for a strategy on frozen embeddings."""
    if ctx.tuning is None:
        return None
    assert ctx.pre is not None  # precomputed vectors are never tuned (suite.py says so)
    cell = ctx.cell
    dataset = cell.catalogue.dataset(ctx.tuning.dataset or cell.dataset).open()
    indices = items(cell, dataset, "train")
    skip = cell.profile.bad_images == "skip"
    run = Run(dataset, indices, ctx.spec, resolve(ctx.spec), ctx.pre, ctx.tuning.blocks,
              cell.params, skip)  # fmt: skip
    return finetune(run, ctx.cache_root)


def embeddings(ctx: CellContext, tuned: Tuned | None = None) -> dict[str, Embedded]:
    """Stage embeddings: the splits the strategy reads (computed on a cache miss), by
    the backbone fine-tuned as ``tuned`` says if given, at the context's precision."""
    checkpoint = None if tuned is None else tuned.checkpoint
    return {
        split: embed(
            ctx.dataset,
            split,
            items(ctx.cell, ctx.dataset, split),
            ctx.spec,
            ctx.pre,
            ctx.cell.profile.batch_size,
            ctx.cache_root,
            checkpoint,
            ctx.precision,
        )
        for split in ctx.strategy.splits
    }


def cell_embeddings(cell: Cell, cache_root: Path) -> dict[str, Embedded]:
    """The embeddings a cell on frozen weights reads (``export``, ``benchmarks/``)."""
    return embeddings(context(cell, cache_root))


def unused(test: Embedded) -> Embedded:
    """An empty train split, for a strategy that reads none (zero-shot)."""
    width = test.vectors.shape[1]
    return dataclasses.replace(
        test,
        vectors=np.zeros((0, width), np.float32),
        labels=test.labels[:0],
        indices=test.indices[:0],
        ids=None,
        query=None,
        computed=0,
        seconds=0.0,
        cost_seconds=0.0,
    )


def outcome_key(
    ctx: CellContext, embedded: dict[str, Embedded], tuned: Tuned | None
) -> dict[str, Any]:
    """Everything that decides the cell's outcome once its embeddings are known."""
    cell = ctx.cell
    return {
        "outcome_version": outcomes.OUTCOME_VERSION,
        "harness": outcomes.harness_digest(),
        "cell": cell.id,
        "embeddings": {s: digest(e.key) for s, e in embedded.items()},
        "content": {s: outcomes.content_digest(e.vectors, e.indices) for s, e in embedded.items()},
        "classes": list(ctx.dataset.classes),
        "protocol": ctx.protocol,
        "strategy": cell.strategy,
        "params": strategy_params(ctx),
        "tuned": None if tuned is None else [tuned.checkpoint.run, tuned.checkpoint.sha256],
        "metrics": METRICS.names(),
        "gate": {"resamples": cell.gate.resamples, "seed": cell.gate.seed},
        "bad_images": cell.profile.bad_images,
        "precision": ctx.precision,
        "libraries": versions(
            (
                *outcomes.STRATEGY_LIBRARIES,
                *search.ENGINE_DISTRIBUTIONS[search.engine()],
                *index.distributions(cell.params),
            )
        ),
        "device": device(),
        "ranking": search.engine(),
    }


def run_cell(cell: Cell, cache_root: Path, recompute: bool = False) -> CellRow:
    """The cell's result: its outcome read from the cache when nothing that decides it
    changed (``recompute``: computed again whatever the cache holds)."""
    start = time.perf_counter()
    cost.reset_peaks()
    ctx = context(cell, cache_root)
    # Setting up (the dataset, the model library's import) is not tuning: a zero-shot
    # cell's table said it trained for the 2.5 s its first import took.
    setup_s = time.perf_counter() - start
    tuned = tune(ctx)
    tune_s = time.perf_counter() - start - setup_s
    embedded = embeddings(ctx, tuned)
    embed_s = sum(e.seconds for e in embedded.values())
    store = outcomes.OutcomeCache(cache_root)

    def compute() -> CellRow:
        row = evaluate(ctx, embedded, tuned)
        seconds = {"setup": setup_s, "tune": tune_s, "embed": embed_s, **row.seconds}
        seconds["total"] = time.perf_counter() - start
        return dataclasses.replace(row, seconds=seconds, computed_seconds=dict(seconds))

    row, stored = store.get(outcome_key(ctx, embedded, tuned), compute, recompute)
    # What the suite says of the cell is its own, whichever suite stored the outcome.
    row = dataclasses.replace(row, **identity(cell))
    if not stored:
        return row
    this_run = {"setup": setup_s, "tune": tune_s, "embed": embed_s}
    this_run["total"] = time.perf_counter() - start
    return dataclasses.replace(
        row, seconds=this_run, result_cache="hit", cache=cache_state(embedded)
    )


def identity(cell: Cell) -> dict[str, Any]:
    """The row's fields the suite decides, not the outcome: its suite, floors and gate."""
    return {
        "suite": cell.suite,
        "floors": {f.metric: f.floor for f in cell.floors},
        "floors_precision": {f.metric: f.precision for f in cell.floors if f.precision},
        "gate": GateSettings(**cell.gate.model_dump()),
    }


def cache_state(embedded: dict[str, Embedded]) -> str:
    """The embedding cache's answer for this run: hit, or miss where any row was computed."""
    return "miss" if any(e.computed for e in embedded.values()) else "hit"


def evaluate(ctx: CellContext, embedded: dict[str, Embedded], tuned: Tuned | None) -> CellRow:
    """Stages strategy, index, statistics and row: what the cell measures on its
    embeddings (the outcome cache stores this)."""
    start = time.perf_counter()
    cell, strategy = ctx.cell, ctx.strategy
    kept, skipped = drop_unreadable(cell, embedded, ctx.dataset)
    test = kept["test"]
    train = kept.get("train") or unused(test)
    classes = ctx.dataset.classes
    warnings = check_classes(cell, train, test, classes, strategy.learns(ctx.protocol))
    if ctx.protocol == "split" and "train" in kept:
        warnings += shared_images(ctx.dataset, train, test)
    outcome = strategy.run(features(ctx, train, test, tuned), strategy_params(ctx))
    gallery = train if gallery_split(ctx.protocol) == "train" else test
    for found in (outcome.items, outcome.reference):
        if found is not None and has_gallery(found):
            to_dataset_indices(found, test, gallery)
    metrics = outcome.metrics
    gate = cell.gate
    ci = {m: list(bootstrap_ci(outcome.items, m, gate.resamples, gate.seed)) for m in metrics}
    costs = cost.cell_cost(ctx.spec, ctx.pre, embedded, outcome, tuned, ctx.cache_root)
    seconds = {**outcome.seconds, "total": time.perf_counter() - start}
    chosen = outcome.chosen
    if tuned is not None and ctx.tuning is not None:
        run = {**tuned.summary, "run": tuned.checkpoint.run, "on": ctx.tuning.dataset}
        chosen = {**chosen, "finetune": run}
    # The near-chance hint is about pretrained models; random-init ones score so.
    if ctx.spec.family != "untrained":
        warnings += sanity_warnings(metrics, len(classes))
    warnings += [note for e in embedded.values() for note in e.notes]
    return CellRow(
        id=cell.id,
        dataset=cell.dataset,
        backbone=cell.backbone,
        strategy=cell.strategy,
        metrics=metrics,
        seconds=seconds,
        cache=cache_state(embedded),
        n_train=len(train.indices),
        n_test=len(test.indices),
        dataset_fingerprint=str(test.key["dataset_fingerprint"]),
        weights_sha256=str(test.key["weights_sha256"]),
        main_metric=strategy.main_metric,
        chosen=chosen,
        preprocess=dict(test.key["preprocess"]),  # type: ignore[call-overload]
        embedding_keys={split: digest(e.key) for split, e in embedded.items()},
        ci=ci,
        protocol=ctx.protocol,
        test_items_sha256=hashlib.sha256(test.indices.astype("<i8").tobytes()).hexdigest(),
        items={name: values.tolist() for name, values in outcome.items.items()},
        cost=costs,
        skipped=skipped,
        warnings=warnings,
        precision=str(test.key["precision"]),
        index=index_report(cell, outcome, metrics),
        gallery=sample_and_worst(outcome.items) if has_gallery(outcome.items) else None,
        **identity(cell),
    )


def strategy_params(ctx: CellContext) -> dict[str, Any]:
    """The cell's strategy parameters, those it takes from the suite's ``[gate]`` table
    (``StrategySpec.from_gate``) filled in where the suite left them unset."""
    gate, params = ctx.cell.gate, ctx.cell.params
    taken = {k: getattr(gate, k) for k in ctx.strategy.from_gate if params.get(k) is None}
    return {**params, **taken}


def tuner(ctx: CellContext, train: Embedded, test: Embedded) -> CellTuner | None:
    """Fine-tuning on request for the strategy (None for precomputed vectors): runs on the
    cell's readable train items."""
    if ctx.pre is None:
        return None
    cell = ctx.cell
    return CellTuner(
        ctx.dataset,
        ctx.spec,
        ctx.pre,
        train.indices,
        test.indices,
        strategy_params(ctx),
        ctx.cache_root,
        cell.profile.batch_size,
        ctx.precision,
        cell.profile.bad_images == "skip",
    )


def features(ctx: CellContext, train: Embedded, test: Embedded, tuned: Tuned | None) -> Features:
    """What a strategy reads: the embeddings and labels, the text tower (text-image
    backbones), the fine-tuned head where it classifies the cell's classes, how the
    dataset's protocol ranks, and fine-tuning on request."""
    own_head = tuned is not None and ctx.tuning is not None and ctx.tuning.own_head
    encode = partial(embed_texts, ctx.spec, cache_root=ctx.cache_root, precision=ctx.precision)
    on_request = tuner(ctx, train, test)
    data = Features(
        train.vectors,
        train.labels,
        test.vectors,
        test.labels,
        len(ctx.dataset.classes),
        ctx.dataset.classes,
        encode if has_text(ctx.spec) else None,
        tuned.head if own_head and tuned is not None else None,
        ctx.protocol,
        train.ids,
        test.ids,
        test.query,
        on_request,
        ctx.precision,
    )
    if on_request is not None:
        on_request.frozen = data
    return data


def to_dataset_indices(items: dict[str, np.ndarray], test: Embedded, gallery: Embedded) -> None:
    """Turn a gallery's positions among the features into dataset indices of the split
    (test for queries; train or test for neighbours), which a report can show."""
    items["query"] = test.indices[items["query"]]
    top = items["top5"]
    items["top5"] = np.where(top >= 0, gallery.indices[np.maximum(top, 0)], -1)


def index_report(cell: Cell, outcome: Outcome, metrics: dict[str, float]) -> IndexReport | None:
    """Stage index: what an approximate index cost the cell: its own report, the exact
    metrics, and the loss of every metric (exact − index, positive where the index does
    worse, with the paired bootstrap interval): a deep metric (MAP@R) can fall while the
    main one holds. None for exact search."""
    if outcome.index is None or outcome.reference is None:
        return None
    gate = cell.gate
    loss = {}
    for metric in metrics:
        loss[metric] = Loss(
            *paired_difference(outcome.items, outcome.reference, metric, gate.resamples, gate.seed)
        )
    return IndexReport(
        **outcome.index,
        exact_metrics=summarise(outcome.reference),
        loss=loss,
        max_index_loss=cell.params.get("max_index_loss"),
    )
