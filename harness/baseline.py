"""Baselines and run comparison: is a cell significantly worse than it was?

A run is stored as ``NAME.json`` (the report) beside ``NAME.items.npz`` (each cell's
per-test-item results). Two runs of a cell compare only when they scored the same test
items of the same dataset under the same protocol; then the difference of each gated
metric gets a paired-bootstrap interval. A cell regresses when the whole interval is
below zero (significant) and the drop exceeds the suite's ``max_drop`` (material).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ShelfbenchError
from harness.stats import Items, paired_difference

IDENTITY = ("dataset_fingerprint", "protocol", "test_items_sha256")


class BaselineError(ShelfbenchError):
    """A baseline that cannot be read or cannot be compared with this run."""


def items_path(report: Path) -> Path:
    return report.with_name(f"{report.stem}.items.npz")


def save_items(report: Path, rows: list[dict[str, Any]]) -> Path:
    """Write each row's per-item arrays (``id|name`` keys) beside ``report``."""
    arrays = {
        f"{row['id']}|{name}": np.asarray(values)
        for row in rows
        for name, values in row.get("items", {}).items()
    }
    path = items_path(report)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class Run:
    """A stored run: its rows by cell id and their per-item results."""

    path: Path
    rows: dict[str, dict[str, Any]]
    items: dict[str, Items]


def load_run(path: Path) -> Run:
    try:
        report = json.loads(Path(path).read_text())
        with np.load(items_path(Path(path))) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise BaselineError(
            f"cannot read run {path} (and {items_path(Path(path)).name} beside it): {exc}"
        ) from None
    items: dict[str, Items] = {}
    for key, values in arrays.items():
        cell, name = key.split("|", 1)
        items.setdefault(cell, {})[name] = values
    return Run(Path(path), {row["id"]: row for row in report["cells"]}, items)


@dataclass(frozen=True)
class Comparison:
    cell: str
    metric: str
    old: float
    new: float
    diff: float
    low: float
    high: float
    max_drop: float

    @property
    def verdict(self) -> str:
        if self.high < 0:
            return "worse"
        if self.low > 0:
            return "better"
        return "no significant change"

    @property
    def regression(self) -> bool:
        return self.high < 0 and self.diff < -self.max_drop

    def line(self) -> str:
        return (
            f"{self.metric}: {self.old:.4f} → {self.new:.4f}, difference {self.diff:+.4f} "
            f"(95% CI {self.low:+.4f} to {self.high:+.4f}), tolerance {self.max_drop:.4f}: "
            f"{self.verdict}"
        )


def compare_cell(
    old_row: dict[str, Any],
    old_items: Items,
    new_row: dict[str, Any],
    new_items: Items,
    metrics: list[str],
    max_drop: float,
    resamples: int,
    seed: int,
) -> list[Comparison]:
    """Paired comparison of ``metrics``; refuses rows that scored different test sets."""
    for field in IDENTITY:
        if old_row.get(field) != new_row.get(field):
            raise BaselineError(
                f"{new_row['id']}: the baseline was measured with another {field} "
                f"({str(old_row.get(field))[:16]} vs {str(new_row.get(field))[:16]}); "
                "comparing different test sets means nothing: refresh it with "
                "--shelf-update-baseline"
            )
    out = []
    for metric in metrics:
        if metric not in old_row["metrics"] or metric not in new_row["metrics"]:
            continue
        diff, low, high = paired_difference(old_items, new_items, metric, resamples, seed)
        out.append(
            Comparison(
                new_row["id"],
                metric,
                old_row["metrics"][metric],
                new_row["metrics"][metric],
                diff,
                low,
                high,
                max_drop,
            )
        )
    return out
