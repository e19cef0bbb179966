"""Run one cell: dataset → backbone → cached embeddings → strategy → metrics → result row."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.backbones import BACKBONES
from harness.cache import digest
from harness.datasets import DATASETS, open_dataset, subset
from harness.embeddings import Embedded, embed, embed_texts
from harness.stats import bootstrap_ci
from harness.strategies import STRATEGIES, Features
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

    def row(self) -> dict[str, Any]:
        return asdict(self)

    def below_floor(self, cell: Cell) -> list[str]:
        """One line per metric under its floor (a missing metric counts as under)."""
        return [
            f"{f.metric} = {self.metrics.get(f.metric, float('nan')):.4f} is below its floor "
            f"{f.floor:.4f} (measured {f.measured:.4f} on {f.date}); "
            f"cell {self.id}, n_train={self.n_train}, n_test={self.n_test}"
            for f in cell.floors
            if not self.metrics.get(f.metric, float("-inf")) >= f.floor
        ]


def cell_embeddings(cell: Cell, cache_root: Path) -> dict[str, Embedded]:
    """The train and test embeddings a cell uses (computed on a cache miss)."""
    dataset = open_dataset(cell.dataset)
    spec = BACKBONES.get(cell.backbone)
    pre = spec.preprocess.resized(cell.profile.image_size, cell.profile.crop_pct)
    sizes = {"train": cell.profile.n_train, "test": cell.profile.n_test}
    return {
        split: embed(
            dataset,
            split,
            subset(len(dataset.split(split)), n, cell.profile.seed + SPLIT_SEEDS[split]),
            spec,
            pre,
            cell.profile.batch_size,
            cache_root,
        )
        for split, n in sizes.items()
    }


def run_cell(cell: Cell, cache_root: Path) -> CellResult:
    start = time.perf_counter()
    embedded = cell_embeddings(cell, cache_root)
    train, test = embedded["train"], embedded["test"]
    strategy = STRATEGIES.get(cell.strategy)
    spec = BACKBONES.get(cell.backbone)
    dataset = DATASETS.get(cell.dataset)
    classes = dataset.classes
    features = Features(
        train.vectors,
        train.labels,
        test.vectors,
        test.labels,
        len(classes),
        classes,
        partial(embed_texts, spec, cache_root=cache_root) if spec.source == "open_clip" else None,
    )
    outcome = strategy.run(features, cell.params)
    metrics = outcome.metrics
    gate = cell.gate
    ci = {m: list(bootstrap_ci(outcome.items, m, gate.resamples, gate.seed)) for m in metrics}
    seconds = {
        "embed": train.seconds + test.seconds,
        **outcome.seconds,
        "total": time.perf_counter() - start,
    }
    seconds["cost"] = train.cost_seconds + test.cost_seconds + seconds["fit"] + seconds["eval"]
    return CellResult(
        id=cell.id,
        dataset=cell.dataset,
        backbone=cell.backbone,
        strategy=cell.strategy,
        metrics=metrics,
        floors={f.metric: f.floor for f in cell.floors},
        seconds=seconds,
        cache="miss" if train.computed or test.computed else "hit",
        n_train=len(train.indices),
        n_test=len(test.indices),
        dataset_fingerprint=str(train.key["dataset_fingerprint"]),
        weights_sha256=str(train.key["weights_sha256"]),
        main_metric=strategy.main_metric,
        chosen=outcome.chosen,
        preprocess=dict(train.key["preprocess"]),  # type: ignore[call-overload]
        embedding_keys={split: digest(e.key) for split, e in embedded.items()},
        ci=ci,
        gate=asdict(gate),
        protocol=dataset.protocol,
        test_items_sha256=hashlib.sha256(test.indices.astype("<i8").tobytes()).hexdigest(),
        items={name: values.tolist() for name, values in outcome.items.items()},
    )
