"""Regression tracking across runs: each cell's main metric run after run, with its
interval, its change from the run before and whether that change is significant.

Runs come from a reports directory's ``runs/<start time>/`` copies (the plugin writes
one per run) or from an MLflow experiment. Where two consecutive runs kept their
per-item results for the same test items, the change gets the paired bootstrap the
baseline gate uses; otherwise it is shown without a verdict.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.baseline import BaselineError, Run, compare_cell, load_run
from harness.ownership import is_run

RESAMPLES, SEED = 1000, 0
SHOWN_RUNS = 20  # the newest runs a report's history reads


@dataclass(frozen=True)
class Point:
    """One run of one cell: when, at which commit and weights, its main metric with the
    95% interval, and its change from the previous run (None for the first) with the
    verdict of the paired comparison ("" where the two runs cannot be paired)."""

    run: str
    started: str
    commit: str
    weights: str
    metric: str
    value: float
    low: float
    high: float
    change: float | None = None
    verdict: str = ""

    @property
    def drop(self) -> bool:
        """A significant drop from the previous run."""
        return self.verdict == "worse"


def run_dirs(reports: Path, damaged: bool = False) -> list[Path]:
    """The run folders under ``reports/runs`` that hold a shelfbench run, oldest first
    (with ``damaged``, also those whose ``latest.json`` is no longer readable as one)."""
    runs = reports / "runs"
    if not runs.is_dir():
        return []
    found = (p / "latest.json" for p in sorted(runs.iterdir()))
    return [f.parent for f in found if (damaged and f.is_file()) or is_run(f)]


def _verdict(previous: Run | None, current: Run, cell: str, metric: str) -> str:
    before = None if previous is None else previous.key(current.rows[cell])
    if previous is None or before not in previous.items or cell not in current.items:
        return ""
    try:
        (comparison,) = compare_cell(
            previous.rows[before], previous.items[before], current.rows[cell],
            current.items[cell], [metric], 0.0, RESAMPLES, SEED,
        )  # fmt: skip
    except (BaselineError, ValueError):  # another test set, or too few items to pair
        return ""
    return comparison.verdict


def from_reports(reports: Path, last: int | None = SHOWN_RUNS) -> dict[str, list[Point]]:
    """Per cell, one point per run that scored it, oldest first, over the ``last`` runs
    (all of them if None)."""
    out: dict[str, list[Point]] = {}
    previous_run: dict[str, Run] = {}
    runs = []
    for folder in run_dirs(reports, damaged=True)[-last if last else 0 :]:
        try:
            runs.append((folder, load_run(folder / "latest.json")))
        except BaselineError as exc:  # a damaged copy: said, and the others are shown
            print(f"shelfbench: history leaves out the run copy {folder}: {exc}", file=sys.stderr)
    # A run written before node ids names a cell by its id: its points join the series of
    # the one node with that id, where there is just one.
    nodes: dict[str, set[str]] = {}
    for _, run in runs:
        for row in run.rows.values():
            if row.node:
                nodes.setdefault(row.id, set()).add(row.node)
    for folder, run in runs:
        provenance = run.provenance
        for key, row in run.rows.items():
            found = nodes.get(row.id, set())
            cell = next(iter(found)) if not row.node and len(found) == 1 else key
            metric = row.main_metric
            if not metric or metric not in row.metrics:
                continue
            low, high = row.ci.get(metric, [np.nan, np.nan])
            points = out.setdefault(cell, [])
            before = points[-1].value if points else None
            points.append(
                Point(
                    folder.name,
                    str(provenance.get("started", folder.name)),
                    str(provenance.get("git_commit") or "")[:12],
                    str(row.weights_sha256)[:12],
                    metric,
                    float(row.metrics[metric]),
                    float(low),
                    float(high),
                    None if before is None else float(row.metrics[metric]) - before,
                    _verdict(previous_run.get(cell), run, key, metric)
                    if before is not None
                    else "",
                )
            )
            previous_run[cell] = run
    return out


def from_mlflow(uri: str) -> dict[str, list[Point]]:
    """Per cell, one point per MLflow cell run of the ``shelfbench`` experiment (no
    per-item results there, so changes carry no verdict)."""
    from harness.tracking import EXPERIMENT, connect

    mlflow = connect(uri)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], order_by=["start_time ASC"])
    out: dict[str, list[Point]] = {}
    if runs.empty or "params.cell" not in runs:
        return out
    for _, run in runs[runs["tags.kind"] == "shelfbench-cell"].iterrows():
        metric = str(run["params.main_metric"])
        name = f"metrics.{metric.replace('@', '_at_')}"
        if name not in run or np.isnan(run[name]):
            continue
        points = out.setdefault(str(run["params.cell"]), [])
        value = float(run[name])
        points.append(
            Point(
                str(run["run_id"])[:12],
                str(run["start_time"]),
                str(run.get("tags.git_commit") or "")[:12],
                str(run.get("params.weights_sha256") or "")[:12],
                metric,
                value,
                float(run.get(f"{name}.low", np.nan)),
                float(run.get(f"{name}.high", np.nan)),
                value - points[-1].value if points else None,
            )
        )
    return out


def lines(history: dict[str, list[Point]]) -> list[str]:
    """The history as text: per cell, one line per run."""
    out = []
    for cell, points in history.items():
        out.append(f"{cell} ({points[0].metric})")
        for p in points:
            change = "" if p.change is None else f"  {p.change:+.4f}"
            verdict = f" ({p.verdict})" if p.verdict else ""
            mark = "  ▼ significant drop" if p.drop else ""
            out.append(
                f"  {p.started}  {p.commit or '-':12}  {p.weights or '-':12}  {p.value:.4f} "
                f"[{p.low:.4f}, {p.high:.4f}]{change}{verdict}{mark}"
            )
    return out


def keep_runs(reports: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` run folders (only folders holding a shelfbench
    run); return those removed."""
    import shutil

    old = run_dirs(reports)[:-keep] if keep > 0 else []
    for folder in old:
        shutil.rmtree(folder)
    return old
