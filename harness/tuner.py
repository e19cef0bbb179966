"""Fine-tuning on request (``harness.strategies.base.Tuner``): the runs a strategy that
decides as it goes (``adaptive``) starts, pilots and resumes, each trained on part of the
cell's train sample and validated each epoch on the rest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import training
from harness.backbones.base import BackboneSpec, Preprocess
from harness.backbones.weights import resolve
from harness.datasets import Dataset
from harness.embeddings import embed
from harness.finetune import advance, finetune
from harness.runtime import cpu_training
from harness.strategies.base import Features, Head, parse_strategy
from harness.training import Run


@dataclass
class CellTuner:
    """Runs of the cell's backbone on its ``train``/``test`` samples (dataset indices);
    ``frozen`` is the cell's Features, whose fields the tuned ones keep."""

    dataset: Dataset
    spec: BackboneSpec
    pre: Preprocess
    train: np.ndarray
    test: np.ndarray
    params: dict[str, Any]
    cache_root: Path
    batch_size: int
    precision: str
    skip_unreadable: bool
    frozen: Features | None = None

    def run(self, rung: str, held: np.ndarray, head: Head | None = None) -> Run:
        _, tuning = parse_strategy(rung)
        if tuning is None or not tuning.own_head:
            raise ValueError(f"{rung} does not fine-tune on the cell's own data")
        return Run(
            self.dataset,
            self.train[~held],
            self.spec,
            resolve(self.spec),
            self.pre,
            tuning.blocks,
            self.params,
            self.skip_unreadable,
            self.train[held],
            head,
        )

    def step_seconds(self, rung: str, held: np.ndarray) -> tuple[float, float]:
        with cpu_training():
            return training.step_seconds(self.run(rung, held))

    def advance(
        self, rung: str, held: np.ndarray, until: int | None, head: Head | None = None
    ) -> dict[str, Any]:
        return advance(self.run(rung, held, head), self.cache_root, until)[1]

    def features(self, rung: str, held: np.ndarray, head: Head | None = None) -> Features:
        assert self.frozen is not None  # cell.features() sets it
        tuned = finetune(self.run(rung, held, head), self.cache_root)
        train, test = (
            embed(self.dataset, split, items, self.spec, self.pre, self.batch_size,
                  self.cache_root, tuned.checkpoint, self.precision).vectors
            for split, items in (("train", self.train), ("test", self.test))
        )  # fmt: skip
        return dataclasses.replace(self.frozen, train=train, test=test, head=tuned.head)
