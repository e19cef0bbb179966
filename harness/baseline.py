"""Baselines and run comparison: is a cell significantly worse than it was?

A run is stored as ``NAME.json`` (the report) beside ``NAME.items.npz`` (each cell's
per-test-item results). Two runs of a cell compare only when they scored the same test
items of the same dataset under the same protocol; then the difference of each gated
metric gets a paired-bootstrap interval. A cell regresses when the whole interval is
below zero (significant) and the drop exceeds the suite's ``max_drop`` (material).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.cache import atomic_write
from harness.errors import ShelfbenchError
from harness.records import Changed
from harness.row import CellRow, Comparison, RowError
from harness.stats import Items, paired_difference

if TYPE_CHECKING:
    from harness.suite import Cell

IDENTITY = ("dataset_fingerprint", "protocol", "test_items_sha256")


class BaselineError(ShelfbenchError):
    """A baseline that cannot be read or cannot be compared with this run."""


def items_path(report: Path) -> Path:
    return report.with_name(f"{report.stem}.items.npz")


def save_items(report: Path, rows: list[CellRow]) -> Path:
    """Write each row's per-item arrays (``key|name``: its node id, or its cell id in a
    row without one) beside ``report``."""
    arrays = {
        f"{row.key}|{name}": np.asarray(values)
        for row in rows
        for name, values in row.items.items()
    }

    def save(path: Path) -> None:
        with path.open("wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    path = items_path(report)
    atomic_write(path, save, 0o644)
    return path


@dataclass(frozen=True)
class Run:
    """A stored run: its rows by key (node id), their per-item results, its provenance."""

    path: Path
    rows: dict[str, CellRow]
    items: dict[str, Items]
    provenance: dict[str, Any] = field(default_factory=dict)

    def key(self, row: CellRow) -> str | None:
        """The key under which this run holds ``row``'s cell: its node id, or in a run
        written before node ids, its cell id; None where it has none."""
        if row.key in self.rows:
            return row.key
        old = self.rows.get(row.id)
        return row.id if old is not None and not old.node else None


def load_run(path: Path) -> Run:
    """A stored run, checked to be one: a report whose ``cells`` each have an id, metrics
    and the test-set identity, and per-item arrays for them in the ``.items.npz``."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
        with np.load(items_path(path)) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BaselineError(
            f"cannot read run {path} (and {items_path(path).name} beside it): {exc}"
        ) from None
    cells = report.get("cells") if isinstance(report, dict) else None
    if not isinstance(cells, list) or not all(_is_row(row) for row in cells):
        raise BaselineError(
            f"{path} is not a shelfbench run: it needs a list 'cells' of rows, each with an "
            f"id, and where it has metrics, {', '.join(SCORED_FIELDS)} "
            "(pytest --shelf-update-baseline writes one)"
        )
    items: dict[str, Items] = {}
    for key, values in arrays.items():
        cell, bar, name = key.rpartition("|")
        if not bar:
            raise BaselineError(f"{items_path(path)}: array {key!r} is not named CELL|METRIC")
        items.setdefault(cell, {})[name] = values
    for row in cells:
        for name, value in (row.get("metrics") or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BaselineError(
                    f"{path}: cell {row['id']}: metric {name!r} is {value!r}, not a number; "
                    "the file was edited or is not a shelfbench run"
                )
    schema = report.get("schema", 1)
    try:
        rows = {row.key: row for row in (CellRow.from_json(r, schema) for r in cells)}
    except RowError as exc:
        raise BaselineError(
            f"{path}: {exc}; the file was edited or is not a shelfbench run"
        ) from None
    provenance = report.get("provenance")
    return Run(path, rows, items, provenance if isinstance(provenance, dict) else {})


SCORED_FIELDS = ("main_metric", *IDENTITY)


def _is_row(row: Any) -> bool:
    """A report row: an id, and for a cell that scored, its metrics and test-set identity."""
    if not isinstance(row, dict) or not isinstance(row.get("id"), str):
        return False
    if "metrics" not in row:
        return True
    return isinstance(row["metrics"], dict) and all(field in row for field in SCORED_FIELDS)


def compare_cell(
    old_row: CellRow,
    old_items: Items,
    new_row: CellRow,
    new_items: Items,
    metrics: list[str],
    max_drop: float,
    resamples: int,
    seed: int,
    against: str = "",
) -> list[Comparison]:
    """Paired comparison of ``metrics`` (with ``against``, the run compared with);
    refuses rows that scored different test sets."""
    for identity in IDENTITY:
        old, new = getattr(old_row, identity), getattr(new_row, identity)
        if old != new:
            raise BaselineError(
                f"{new_row.id}: the baseline was measured with another {identity} "
                f"({str(old)[:16]} vs {str(new)[:16]}); "
                "comparing different test sets means nothing: refresh it with "
                "--shelf-update-baseline"
            )
    out = []
    for metric in metrics:
        if metric not in old_row.metrics or metric not in new_row.metrics:
            continue
        diff, low, high = paired_difference(old_items, new_items, metric, resamples, seed)
        out.append(
            Comparison(
                new_row.id,
                metric,
                old_row.metrics[metric],
                new_row.metrics[metric],
                diff,
                low,
                high,
                max_drop,
                against,
            )
        )
    return out


@dataclass(frozen=True)
class Gated:
    """A cell against a reference run of it: the comparisons of its main and floored
    metrics, and the queries whose first relevant neighbour moved most."""

    comparisons: list[Comparison]
    changed: Changed | None


def gate(
    row: CellRow,
    items: Items,
    reference: CellRow,
    reference_items: Items,
    cell: Cell,
    max_drop: float,
    against: str,
) -> Gated:
    """Compare a cell's ``row`` with a ``reference`` run of it (``against``: a baseline's,
    or its incumbent's under [upgrade]) on the main and floored metrics, paired over the
    same test items."""
    from harness.gallery import changed

    gated = list(dict.fromkeys([row.main_metric, *(f.metric for f in cell.floors)]))
    comparisons = compare_cell(
        reference, reference_items, row, items, gated, max_drop,
        cell.gate.resamples, cell.gate.seed, against,
    )  # fmt: skip
    return Gated(comparisons, changed(reference_items, items, against))
