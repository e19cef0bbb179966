"""The on-disk embedding cache: one entry per (dataset split, backbone, weights, preprocessing,
library versions), named by the hash of that key, with the key beside it in clear.

An entry is a set of parts, each an ``.npz`` of item indices and their float32 embeddings.
Rows are buffered while they are computed and written as a part every few seconds or few
thousand rows, each part atomically (temp file, then ``os.replace``): memory stays bounded,
an interrupted run keeps every part it wrote, and the disk holds only rows really computed
(a sparse full-split memmap would not: 10k random rows of Fashion-MNIST's 60k took 232 of
307 MB). A ``filelock`` around each fill keeps pytest-xdist workers, which are separate
processes, from computing the same rows twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock

from harness.errors import CacheError

# Bump when extraction changes in a way the other key fields do not show.
EMBEDDING_VERSION = 1
PART_SECONDS = 10.0
PART_ROWS = 4096

Batches = Iterator[tuple[np.ndarray, np.ndarray]]


def digest(key: dict[str, object]) -> str:
    """sha256 of the key's canonical JSON: the entry's directory name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` to a temp file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class CacheEntry:
    """Embeddings of the items of one split under one key."""

    def __init__(self, root: Path, key: dict[str, object], n_items: int) -> None:
        self.key = key
        self.n_items = n_items
        self.digest = digest(key)
        self.dir = root / "embeddings" / self.digest[:2] / self.digest

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.npz"))

    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Path]]:
        """For every cached item: its index, the part holding it, its row in that part."""
        parts = self._parts()
        items, owners, rows = (
            [np.zeros(0, np.int64)],
            [np.zeros(0, np.int64)],
            [np.zeros(0, np.int64)],
        )
        for number, part in enumerate(parts):
            with np.load(part) as data:
                items.append(data["indices"])
            owners.append(np.full(len(items[-1]), number))
            rows.append(np.arange(len(items[-1])))
        return np.concatenate(items), np.concatenate(owners), np.concatenate(rows), parts

    def done(self) -> np.ndarray:
        """Boolean mask over the split's items: True where the embedding is cached."""
        items = self._index()[0]
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise CacheError(f"{self.dir} holds items outside 0..{self.n_items - 1}; delete it")
        mask = np.zeros(self.n_items, dtype=bool)
        mask[items] = True
        return mask

    def has(self, indices: np.ndarray) -> bool:
        return bool(self.done()[indices].all())

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The embeddings of ``indices``, in that order, as a float32 array."""
        items, owners, rows, parts = self._index()
        where = np.full(self.n_items, -1)
        where[items] = np.arange(len(items))
        found = where[indices]
        if len(indices) == 0 or (found < 0).any():
            raise CacheError(f"{self.dir}: rows requested that were never computed")
        out = np.empty((len(indices), 0), dtype=np.float32)
        for number in np.unique(owners[found]):
            with np.load(parts[number]) as data:
                vectors = data["vectors"]
            if out.shape[1] == 0:
                out = np.empty((len(indices), vectors.shape[1]), dtype=np.float32)
            wanted = owners[found] == number
            out[wanted] = vectors[rows[found[wanted]]]
        return out

    def fill(self, indices: np.ndarray, produce: Callable[[np.ndarray], Batches]) -> int:
        """Compute the missing rows among ``indices`` with ``produce``; return how many."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.dir / "lock"):
            missing = indices[~self.done()[indices]]
            if len(missing) == 0:
                return 0
            if not (self.dir / "key.json").exists():
                text = json.dumps(self.key, indent=1, sort_keys=True)
                atomic_write(self.dir / "key.json", lambda p: p.write_text(text))
            buffered: list[tuple[np.ndarray, np.ndarray]] = []
            last = time.monotonic()
            try:
                for rows, batch in produce(missing):
                    buffered.append((rows, batch))
                    full = sum(len(r) for r, _ in buffered) >= PART_ROWS
                    if full or time.monotonic() - last > PART_SECONDS:
                        self._write_part(buffered, time.monotonic() - last)
                        buffered, last = [], time.monotonic()
            finally:
                self._write_part(buffered, time.monotonic() - last)
            return len(missing)

    def seconds_per_item(self) -> float:
        """Compute time per cached row when it was computed (0 for an empty entry): the
        cost of these embeddings, which a warm run's wall time does not show."""
        seconds = rows = 0.0
        for part in self._parts():
            with np.load(part) as data:
                seconds += float(data["seconds"])
                rows += len(data["indices"])
        return seconds / rows if rows else 0.0

    def _write_part(self, buffered: list[tuple[np.ndarray, np.ndarray]], seconds: float) -> None:
        if not buffered:
            return
        indices = np.concatenate([rows for rows, _ in buffered]).astype(np.int64)
        vectors = np.concatenate([batch for _, batch in buffered]).astype(np.float32)

        def save(path: Path) -> None:
            with path.open("wb") as f:
                np.savez(f, indices=indices, vectors=vectors, seconds=seconds)

        atomic_write(self.dir / f"part-{uuid.uuid4().hex}.npz", save)
