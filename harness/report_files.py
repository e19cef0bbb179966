"""Writing a run's reports: latest.{json,md,csv,html} and latest.items.npz, each atomically,
and a copy of the run under runs/ that no other run, concurrent or not, can overwrite."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from harness.baseline import items_path, save_items
from harness.cache import atomic_write
from harness.document import build, markdown
from harness.history import from_reports
from harness.history import keep_runs as keep
from harness.report import to_csv
from harness.report_html import html
from harness.row import SCHEMA, CellRow

# Reports are for sharing: readable by all.
SHARED = 0o644


def write_shared(path: Path, write: Callable[[Path], object]) -> Path:
    atomic_write(path, write, SHARED)
    return path


def history_dir(directory: Path, started: str) -> Path:
    """A new folder ``runs/<start time>[-N]/``: runs that start in the same second get
    their own."""
    base = directory / "runs" / started.replace(":", "")
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise OSError(f"{base.parent}: too many runs started at {started}")


def write_reports(
    directory: Path,
    provenance: dict[str, Any],
    rows: list[CellRow],
    keep_runs: int | None = None,
) -> list[Path]:
    """Write latest.json (with latest.items.npz beside it), .md, .csv and .html atomically,
    and keep a copy of the run under runs/<start time>/ (the newest ``keep_runs`` of them,
    if given; all otherwise); return the paths written. The Markdown and HTML reports
    show each cell's history across the runs kept there."""
    directory.mkdir(parents=True, exist_ok=True)
    plain = [replace(row, items={}) for row in rows]  # per-item results go to the .npz
    cells = [{k: v for k, v in row.to_json().items() if k != "items"} for row in plain]
    run = history_dir(directory, provenance["started"])
    report = {"schema": SCHEMA, "provenance": provenance, "cells": cells}
    text = json.dumps(report, indent=1) + "\n"
    paths = [write_shared(run / "latest.json", lambda p: p.write_text(text))]
    paths.append(save_items(run / "latest.json", rows))
    past = from_reports(directory)
    documents = {
        "latest.md": markdown(build(provenance, plain, past)),
        "latest.csv": to_csv(plain),
        "latest.html": html(provenance, plain, past),
    }
    for name, document in documents.items():
        paths.append(write_shared(run / name, partial(Path.write_text, data=document)))
    latest = [write_shared(directory / path.name, partial(shutil.copy, path)) for path in paths]
    if keep_runs is not None:
        keep(directory, keep_runs)
    return latest


def copy_run(report: Path, target: Path) -> list[Path]:
    """Copy a run (its .json and .items.npz) to ``target``, e.g. to make it the baseline."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return [
        write_shared(target, lambda p: shutil.copy(report, p)),
        write_shared(items_path(target), lambda p: shutil.copy(items_path(report), p)),
    ]
