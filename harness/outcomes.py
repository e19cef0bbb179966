"""The outcome cache: a cell whose inputs did not change is not computed again.

A cell's outcome (metrics, intervals, per-item arrays, gallery, index measurements,
costs: its whole ``CellRow``) is stored under a key made of everything that decides
it: the content of the embeddings it read, the strategy and its resolved parameters,
the metrics and bootstrap settings, the precision, the libraries that change numbers,
and a digest of shelfbench's own source (any change to the harness code invalidates
every outcome; embeddings keep their own key). Entries are written atomically under a
lock, so pytest-xdist workers share them, and carry the sha256 of their contents: one
that changed, or cannot be read, is discarded in one line and computed again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from harness.cache import atomic_write, digest
from harness.paths import may_write
from harness.row import CellRow, RowError

OUTCOME_VERSION = 3
# What every strategy computes with (its heads, probes, metrics and bootstrap); the
# ranking engine's and an index engine's packages come from their records.
STRATEGY_LIBRARIES = ("numpy", "torch")


@functools.cache
def harness_digest() -> str:
    """sha256 over every source file of the ``harness`` package, by relative path."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def content_digest(vectors: np.ndarray, indices: np.ndarray) -> str:
    """What an embedding split served, exactly: its items and their vectors."""
    h = hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    return h.hexdigest()


def _sealed(result: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


class OutcomeCache:
    """``<cache>/outcomes/``: one JSON file per key, ``{"key", "result", "sha256"}``."""

    def __init__(self, root: Path) -> None:
        self.root = root / "outcomes"

    def _path(self, key: dict[str, Any]) -> Path:
        name = digest(key)
        return self.root / name[:2] / f"{name}.json"

    def read(self, key: dict[str, Any]) -> CellRow | None:
        """The stored result for ``key``, checked; None on a miss. An entry that fails its
        check is removed, saying so once."""
        path = self._path(key)
        if not path.exists():
            return None
        row = None
        try:
            stored = json.loads(path.read_text())
            ok = stored["key"] == json.loads(json.dumps(key))  # as JSON wrote it: lists
            if ok and _sealed(stored["result"]) == stored["sha256"]:
                row = CellRow.from_json(stored["result"])
        except (OSError, ValueError, KeyError, TypeError, RowError):
            pass
        if row is None:
            kept = not may_write(path)  # a read-only cache: left as it is
            if not kept:
                path.unlink(missing_ok=True)
            print(
                f"shelfbench: outcome {path} failed its content check (changed, or not this "
                f"cell's); {'it is ignored' if kept else 'it was removed'} and the cell is "
                "computed again",
                file=sys.stderr,
            )
            return None
        return row

    def write(self, key: dict[str, Any], row: CellRow) -> None:
        path = self._path(key)
        result = row.to_json()
        text = json.dumps({"key": key, "result": result, "sha256": _sealed(result)})
        atomic_write(path, lambda p: p.write_text(text))

    def get(
        self, key: dict[str, Any], compute: Callable[[], CellRow], recompute: bool = False
    ) -> tuple[CellRow, bool]:
        """The row for ``key`` and whether it was stored: read, or computed by ``compute``
        and stored (``recompute``: computed and stored even on a hit). One process at a
        time computes a key; the others then read what it wrote."""
        path = self._path(key)
        if not may_write(path):  # a read-only cache: served, or computed and not kept
            stored = None if recompute or not path.exists() else self.read(key)
            return (stored, True) if stored is not None else (compute(), False)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_suffix(".lock")):
            if not recompute and (stored := self.read(key)) is not None:
                return stored, True
            row = compute()
            self.write(key, row)
            return row, False
