"""A cell's result in plain types (it crosses pytest-xdist processes and the outcome
cache): what it measured, the provenance that identifies it, and its checks against
floors and against exact search."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from math import nan
from typing import Any

from harness.baseline import Comparison
from harness.metrics import METRICS
from harness.suite import Cell


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
    result_cache: str = "miss"  # the outcome cache: hit (read) or miss (computed here)
    computed_seconds: dict[str, float] = field(default_factory=dict)  # when it was computed

    def row(self) -> dict[str, Any]:
        """The result as a report row: a new dict (its warnings a new list, since the
        plugin adds gate warnings to the row), the other values shared, not copied."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**row, "warnings": list(self.warnings)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        """A result as ``row()`` wrote it (an outcome cache entry, a report's row)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

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
