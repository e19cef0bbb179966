"""Result tables: the terminal summary and reports/latest.{json,md,csv}."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tabulate import tabulate

SCHEMA = 1
# Metric columns in display order; the terminal shows the first few that any row has.
METRIC_ORDER = (
    "accuracy",
    "top5_accuracy",
    "macro_f1",
    "recall@1",
    "recall@5",
    "mmp@5",
    "map@r",
    "mrr@10",
    "ndcg@10",
)
TERMINAL_METRICS = ("accuracy", "macro_f1", "recall@1", "mmp@5", "map@r")


def metric_columns(
    rows: Iterable[dict[str, Any]], wanted: Iterable[str] = METRIC_ORDER
) -> list[str]:
    present = {m for row in rows for m in row.get("metrics", {})}
    return [m for m in wanted if m in present]


def _cell(row: dict[str, Any], metric: str) -> str:
    value = row.get("metrics", {}).get(metric)
    if value is None:
        return ""
    floor = row.get("floors", {}).get(metric)
    mark = "" if floor is None else (" ✓" if value >= floor else " ✗")
    return f"{value:.4f}{mark}"


def table(rows: list[dict[str, Any]], metrics: list[str], fmt: str) -> str:
    """One line per cell: outcome, metrics (✓/✗ against a floor), cache, seconds."""
    headers = ["cell", "outcome", *metrics, "cache", "embed s", "fit s", "total s"]
    body = []
    for row in rows:
        seconds = row.get("seconds", {})
        body.append(
            [
                row["id"],
                row["outcome"],
                *(_cell(row, m) for m in metrics),
                row.get("cache", ""),
                *(f"{seconds[p]:.1f}" if p in seconds else "" for p in ("embed", "fit", "total")),
            ]
        )
    return tabulate(body, headers, tablefmt=fmt, disable_numparse=True)


def terminal_table(rows: list[dict[str, Any]]) -> str:
    return table(rows, metric_columns(rows, TERMINAL_METRICS), "simple")


def markdown(provenance: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# shelfbench results", ""]
    lines += [f"- {key}: {value}" for key, value in provenance.items()]
    lines += ["", "✓ / ✗: at / below the suite's floor for that metric.", ""]
    for dataset in sorted({row["dataset"] for row in rows}):
        subset = [row for row in rows if row["dataset"] == dataset]
        lines += [f"## {dataset}", "", table(subset, metric_columns(subset), "github"), ""]
    problems = [row for row in rows if row.get("message")]
    if problems:
        lines += ["## Failures and skips", ""]
        lines += [f"- `{row['id']}` ({row['outcome']}): {row['message']}" for row in problems]
        lines.append("")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    metrics = metric_columns(rows)
    fields = [
        "id",
        "dataset",
        "backbone",
        "strategy",
        "outcome",
        *metrics,
        "cache",
        "n_train",
        "n_test",
        "embed_s",
        "fit_s",
        "eval_s",
        "total_s",
        "dataset_fingerprint",
        "weights_sha256",
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {**row, **row.get("metrics", {})}
        flat.update({f"{p}_s": s for p, s in row.get("seconds", {}).items()})
        writer.writerow(flat)
    return out.getvalue()


def write_reports(
    directory: Path, provenance: dict[str, Any], rows: list[dict[str, Any]]
) -> list[Path]:
    """Write latest.json, latest.md and latest.csv atomically; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = {
        "latest.json": json.dumps(
            {"schema": SCHEMA, "provenance": provenance, "cells": rows}, indent=1, sort_keys=False
        )
        + "\n",
        "latest.md": markdown(provenance, rows),
        "latest.csv": to_csv(rows),
    }
    paths = []
    for name, text in documents.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, directory / name)
        paths.append(directory / name)
    return paths
