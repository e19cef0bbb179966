"""A cell's row: one typed record, from the cell's result through the plugin and the
outcome cache to every report, the baseline gate, MLflow and the history.

A row crosses processes (pytest-xdist) and files as JSON (``to_json``/``from_json``);
``SCHEMA`` is the version of that JSON, written into every report. A row read from an
older report of the same schema gets the defaults of the fields it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from math import nan
from typing import TYPE_CHECKING, Any

from harness.metrics import METRICS

if TYPE_CHECKING:
    from harness.baseline import Comparison
    from harness.suite import Cell

SCHEMA = 1


@dataclass
class CellRow:
    """Everything known of one cell in a run, in plain types: what it is, how it ended,
    what it measured (empty for a cell that did not run), and how it fared against a
    baseline or its [upgrade] incumbent."""

    id: str
    dataset: str = ""
    backbone: str = ""
    strategy: str = ""
    suite: str = ""
    outcome: str = "passed"  # passed, failed, skipped, error
    message: str = ""  # why it did not pass
    metrics: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # this run's, per phase
    cache: str = ""  # the embeddings' cache: hit or miss
    n_train: int = 0
    n_test: int = 0
    dataset_fingerprint: str = ""
    weights_sha256: str = ""
    main_metric: str = ""
    chosen: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    embedding_keys: dict[str, str] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    gate: dict[str, float] = field(default_factory=dict)
    protocol: str = ""
    test_items_sha256: str = ""
    items: dict[str, list[Any]] = field(default_factory=dict)  # per test item
    cost: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)  # unreadable images
    warnings: list[str] = field(default_factory=list)
    precision: str = ""
    index: dict[str, Any] = field(default_factory=dict)  # an approximate index's report
    gallery: dict[str, Any] = field(default_factory=dict)
    result_cache: str = "miss"  # the outcome cache: hit (read) or miss (computed here)
    computed_seconds: dict[str, float] = field(default_factory=dict)  # when it was computed
    baseline: list[dict[str, Any]] = field(default_factory=list)  # against --shelf-baseline
    upgrade: list[dict[str, Any]] = field(default_factory=list)  # against its incumbent
    changed: dict[str, Any] = field(default_factory=dict)  # queries whose first hit moved

    def to_json(self) -> dict[str, Any]:
        """The row as JSON holds it (values shared, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellRow:
        """A row as ``to_json`` wrote it, in this schema (fields it lacks take defaults)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def copy(self) -> CellRow:
        """A row of its own to add verdicts and warnings to (values shared otherwise)."""
        return replace(self, warnings=list(self.warnings))

    @property
    def scored(self) -> bool:
        return bool(self.metrics)

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
        from harness.baseline import Comparison

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
