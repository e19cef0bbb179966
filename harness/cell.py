"""Run one cell: dataset → backbone → cached embeddings → strategy → metrics → result row."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import asdict, dataclass
from functools import partial
from math import nan
from pathlib import Path
from typing import Any

import numpy as np

from harness import cost, search
from harness.backbones import BACKBONES
from harness.backbones.adapters import has_text
from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.declared import complete
from harness.backbones.weights import resolve
from harness.baseline import Comparison
from harness.cache import digest
from harness.datasets import DATASETS, Dataset, open_dataset, subset
from harness.embeddings import Embedded, embed, embed_texts
from harness.errors import DatasetError
from harness.extract import device, resolve_precision
from harness.finetune import Run, Tuned, finetune
from harness.gallery import has_gallery, sample_and_worst
from harness.metrics import METRICS
from harness.stats import bootstrap_ci, paired_difference, summarise
from harness.strategies import Features, Outcome, Tuning, parse_strategy
from harness.suite import Cell

# Seeds of the train and test subsets differ so the two samples are independent.
SPLIT_SEEDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class CellResult:
    """Everything a cell measured, in plain types (it crosses pytest-xdist processes)."""

    id: str
    dataset: str
    backbone: str
    strategy: str
    metrics: dict[str, float]
    floors: dict[str, float]
    seconds: dict[str, float]
    cache: str
    n_train: int
    n_test: int
    dataset_fingerprint: str
    weights_sha256: str
    main_metric: str
    chosen: dict[str, Any]
    preprocess: dict[str, Any]
    embedding_keys: dict[str, str]
    ci: dict[str, list[float]]
    gate: dict[str, float]
    protocol: str
    test_items_sha256: str
    items: dict[str, list[float]]
    cost: dict[str, Any]
    skipped: dict[str, Any]
    warnings: list[str]
    precision: str
    index: dict[str, Any]
    gallery: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return asdict(self)

    def below_floor(self, cell: Cell) -> list[str]:
        """One line per metric under its floor (a missing metric counts as under)."""
        return [
            f"{f.metric} = {self.metrics.get(f.metric, nan):.4f} is below its floor "
            f"{f.floor:.4f} (measured {f.measured:.4f} on {f.date}); "
            f"cell {self.id}, n_train={self.n_train}, n_test={self.n_test}"
            for f in cell.floors
            if not METRICS.get(f.metric).gain(f.floor, self.metrics.get(f.metric, nan)) >= 0
        ]

    def index_loss(self) -> Comparison | None:
        """The main metric under the index against exact search (paired bootstrap), with
        the suite's ``max_index_loss`` as its tolerance; None for exact search."""
        if not self.index:
            return None
        loss = self.index["loss"][self.main_metric]
        tolerance = self.index["max_index_loss"]
        return Comparison(
            self.id,
            self.main_metric,
            self.index["exact_metrics"][self.main_metric],
            self.metrics[self.main_metric],
            -loss["value"],
            -loss["high"],
            -loss["low"],
            float("inf") if tolerance is None else tolerance,
        )


def preprocess(cell: Cell, spec: BackboneSpec) -> Preprocess:
    """The backbone's preprocessing (a declared backbone's from its library's config) at
    the cell profile's size and crop."""
    pre = complete(spec).preprocess
    assert pre is not None  # complete() fills it
    return pre.resized(cell.profile.image_size, cell.profile.crop_pct)


def items(cell: Cell, dataset: Dataset, split: str) -> np.ndarray:
    """The seeded sample of ``split`` the cell's profile asks for."""
    n = {"train": cell.profile.n_train, "test": cell.profile.n_test}[split]
    return subset(len(dataset.split(split)), n, cell.profile.seed + SPLIT_SEEDS[split])


def cell_embeddings(
    cell: Cell, cache_root: Path, tuned: Tuned | None = None
) -> dict[str, Embedded]:
    """The embeddings of the splits the cell's strategy reads (computed on a cache miss),
    by the backbone fine-tuned as ``tuned`` says if given, at the profile's precision."""
    dataset = open_dataset(cell.dataset)
    spec = BACKBONES.get(cell.backbone)
    pre = preprocess(cell, spec)
    checkpoint = None if tuned is None else tuned.checkpoint
    precision = resolve_precision(cell.profile.precision)
    return {
        split: embed(
            dataset,
            split,
            items(cell, dataset, split),
            spec,
            pre,
            cell.profile.batch_size,
            cache_root,
            checkpoint,
            precision,
        )
        for split in parse_strategy(cell.strategy)[0].splits
    }


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


def tune(cell: Cell, tuning: Tuning, cache_root: Path) -> Tuned:
    """The cell's backbone fine-tuned as ``tuning`` says, on the train sample the profile
    draws from the tuning dataset (the cell's own unless cross-tuning)."""
    dataset = open_dataset(tuning.dataset or cell.dataset)
    spec = BACKBONES.get(cell.backbone)
    pre = preprocess(cell, spec)
    indices = items(cell, dataset, "train")
    skip = cell.profile.bad_images == "skip"
    run = Run(dataset, indices, spec, resolve(spec), pre, tuning.blocks, cell.params, skip)
    return finetune(run, cache_root)


def cell_cost(
    cell: Cell,
    embedded: dict[str, Embedded],
    outcome: Outcome,
    tuned: Tuned | None,
    cache_root: Path,
) -> dict[str, Any]:
    """What the cell's result took to compute, cached or not: compute seconds per phase
    (embedding and fine-tuning as recorded when they ran), forward GFLOPs per image,
    trainable parameters, estimated training GFLOPs, peak memory and device."""
    spec = BACKBONES.get(cell.backbone)
    pre = preprocess(cell, spec)
    gflops = cost.gflops_per_image(spec, pre, cache_root)
    embed_s = sum(e.cost_seconds for e in embedded.values())
    n_images = sum(len(e.indices) for e in embedded.values())
    train_s, trainable, train_gflops = outcome.seconds["fit"], outcome.trainable_params, 0.0
    if tuned is not None:
        summary = tuned.summary
        head = tuned.head[0].size + tuned.head[1].size
        fraction = (summary["trainable_params"] - head) / summary["backbone_params"]
        # Forward, plus about two forwards' worth of backward for the trainable share.
        train_gflops = gflops * summary["images_seen"] * (1 + 2 * fraction)
        train_s += summary["seconds"]
        trainable += summary["trainable_params"]
    seconds = {"embed": embed_s, "train": train_s, "eval": outcome.seconds["eval"]}
    return {
        "seconds": {**seconds, "total": sum(seconds.values())},
        "images_per_second": n_images / embed_s if embed_s else None,
        "gflops_per_image": gflops,
        "trainable_params": trainable,
        "train_gflops": train_gflops + outcome.train_gflops,
        "peak_rss_mb": cost.peak_rss_mb(),
        "peak_cuda_mb": cost.peak_cuda_mb(),
        "device": device(),
        "ranking": search.engine(),
    }


def drop_unreadable(
    cell: Cell, embedded: dict[str, Embedded], dataset: Dataset
) -> tuple[dict[str, Embedded], dict[str, Any]]:
    """Leave out items whose image could not be read (NaN rows in the cache), counting
    them, or fail the cell if its profile says ``bad_images = "fail"``."""
    kept, skipped, examples = {}, {}, []
    for split, e in embedded.items():
        bad = np.isnan(e.vectors).any(axis=1)
        skipped[split] = int(bad.sum())
        data = dataset.split(split)
        examples += [str(data.path(int(i))) for i in e.indices[bad][:3] if hasattr(data, "path")]
        kept[split] = dataclasses.replace(
            e,
            vectors=e.vectors[~bad],
            labels=e.labels[~bad],
            indices=e.indices[~bad],
            ids=None if e.ids is None else e.ids[~bad],
            query=None if e.query is None else e.query[~bad],
        )
    for split, e in kept.items():
        if len(e.indices) == 0:
            raise DatasetError(
                f"{cell.id}: none of the {skipped[split]} {split} images could be read, e.g. "
                f"{', '.join(examples) or 'see the log'}"
            )
    if sum(skipped.values()) and cell.profile.bad_images == "fail":
        raise DatasetError(
            f"{cell.id}: {sum(skipped.values())} images could not be read, e.g. "
            f'{", ".join(examples) or "see the log"}; fix them, or set bad_images = "skip" '
            "in the suite's [profile] (the embeddings of the rest are cached)"
        )
    return kept, {**skipped, "examples": examples}


def check_classes(
    cell: Cell, train: Embedded, test: Embedded, classes: tuple[str, ...], learns: bool
) -> list[str]:
    """Refuse a cell whose items all have one class (every metric would be a perfect 1.0);
    warn when test classes have no train item and the strategy compares test items with
    train labels (``learns``): those items can never be classified right, and under the
    split protocol their queries have nothing relevant to retrieve."""
    present = np.union1d(train.labels, test.labels)
    if len(present) < 2:
        name = classes[present[0]] if len(present) and present[0] < len(classes) else present
        raise DatasetError(
            f"{cell.id}: every item the cell uses has the one class {name!r}, so every "
            "metric would be a perfect 1.0; a benchmark needs two classes or more"
        )
    absent = np.setdiff1d(test.labels, train.labels)
    if not learns or not len(absent):
        return []
    n_items = int(np.isin(test.labels, absent).sum())
    examples = ", ".join(repr(classes[c]) if c < len(classes) else str(c) for c in absent[:3])
    return [
        f"{len(absent)} test class(es) have no train item (e.g. {examples}): their "
        f"{n_items} of {len(test.labels)} test items can never be classified right, and "
        "have nothing relevant to retrieve from the train split"
    ]


def sanity_warnings(metrics: dict[str, float], n_classes: int) -> list[str]:
    """A near-chance accuracy on a few-class dataset is more often a label-mapping bug
    (class folders numbered differently in train and test) than a bad model."""
    accuracy = metrics.get("accuracy")
    if accuracy is None or n_classes > 50 or accuracy > 1.5 / n_classes:
        return []
    return [
        f"accuracy {accuracy:.3f} is near chance (1/{n_classes} = {1 / n_classes:.3f}); "
        "if the backbone is pretrained, check that train and test labels map the same "
        "classes to the same numbers (e.g. ImageFolder class folders in both splits)"
    ]


def to_dataset_indices(items: dict[str, np.ndarray], test: Embedded, gallery: Embedded) -> None:
    """Turn a gallery's positions among the features into dataset indices of the split
    (test for queries; train or test for neighbours), which a report can show."""
    items["query"] = test.indices[items["query"]]
    top = items["top5"]
    items["top5"] = np.where(top >= 0, gallery.indices[np.maximum(top, 0)], -1)


def index_report(cell: Cell, outcome: Outcome, metrics: dict[str, float]) -> dict[str, Any]:
    """What an approximate index cost the cell: its own report, the exact metrics, and the
    loss of every metric (exact − index, positive where the index does worse, with the
    paired bootstrap interval): a deep metric (MAP@R) can fall while the main one holds.
    Empty for exact search."""
    if outcome.index is None or outcome.reference is None:
        return {}
    gate = cell.gate
    loss = {}
    for metric in metrics:
        diff, low, high = paired_difference(
            outcome.items, outcome.reference, metric, gate.resamples, gate.seed
        )
        loss[metric] = {"value": diff, "low": low, "high": high}
    return {
        **outcome.index,
        "exact_metrics": summarise(outcome.reference),
        "loss": loss,
        "max_index_loss": cell.params.get("max_index_loss"),
    }


def run_cell(cell: Cell, cache_root: Path) -> CellResult:
    start = time.perf_counter()
    cost.reset_peaks()
    strategy, tuning = parse_strategy(cell.strategy)
    tuned = None if tuning is None else tune(cell, tuning, cache_root)
    tune_s = time.perf_counter() - start
    opened = open_dataset(cell.dataset)
    embedded, skipped = drop_unreadable(cell, cell_embeddings(cell, cache_root, tuned), opened)
    test = embedded["test"]
    train = embedded.get("train") or unused(test)
    spec = BACKBONES.get(cell.backbone)
    dataset = DATASETS.get(cell.dataset)
    classes = opened.classes
    # Zero-shot reads class names only; kNN compares test items with train labels only
    # when the train split is the gallery.
    learns = not strategy.needs_text and (strategy.name != "knn" or dataset.protocol == "split")
    warnings = check_classes(cell, train, test, classes, learns)
    features = Features(
        train.vectors,
        train.labels,
        test.vectors,
        test.labels,
        len(classes),
        classes,
        partial(embed_texts, spec, cache_root=cache_root) if has_text(spec) else None,
        tuned.head if tuned is not None and tuning and tuning.dataset is None else None,
        dataset.protocol,
        train.ids,
        test.ids,
        test.query,
    )
    outcome = strategy.run(features, cell.params)
    gallery_split = train if dataset.protocol == "split" else test
    for items in (outcome.items, outcome.reference):
        if items is not None and has_gallery(items):
            to_dataset_indices(items, test, gallery_split)
    metrics = outcome.metrics
    gate = cell.gate
    ci = {m: list(bootstrap_ci(outcome.items, m, gate.resamples, gate.seed)) for m in metrics}
    seconds = {
        "tune": tune_s,
        "embed": train.seconds + test.seconds,
        **outcome.seconds,
        "total": time.perf_counter() - start,
    }
    costs = cell_cost(cell, embedded, outcome, tuned, cache_root)
    seconds["cost"] = costs["seconds"]["total"]
    chosen = outcome.chosen
    if tuned is not None:
        chosen = {
            **chosen,
            "finetune": {**tuned.summary, "run": tuned.checkpoint.run, "on": tuning.dataset},
        }
    return CellResult(
        id=cell.id,
        dataset=cell.dataset,
        backbone=cell.backbone,
        strategy=cell.strategy,
        metrics=metrics,
        floors={f.metric: f.floor for f in cell.floors},
        seconds=seconds,
        cache="miss" if any(e.computed for e in embedded.values()) else "hit",
        n_train=len(train.indices),
        n_test=len(test.indices),
        dataset_fingerprint=str(test.key["dataset_fingerprint"]),
        weights_sha256=str(test.key["weights_sha256"]),
        main_metric=strategy.main_metric,
        chosen=chosen,
        preprocess=dict(test.key["preprocess"]),  # type: ignore[call-overload]
        embedding_keys={split: digest(e.key) for split, e in embedded.items()},
        ci=ci,
        gate=gate.model_dump(),
        protocol=dataset.protocol,
        test_items_sha256=hashlib.sha256(test.indices.astype("<i8").tobytes()).hexdigest(),
        items={name: values.tolist() for name, values in outcome.items.items()},
        cost=costs,
        skipped=skipped,
        # The near-chance hint is about pretrained models; random-init ones score so.
        warnings=warnings
        + ([] if spec.family == "untrained" else sanity_warnings(metrics, len(classes))),
        precision=str(test.key["precision"]),
        index=index_report(cell, outcome, metrics),
        gallery=sample_and_worst(outcome.items) if has_gallery(outcome.items) else {},
    )
