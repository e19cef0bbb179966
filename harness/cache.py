"""The on-disk embedding cache: one entry per (dataset split, backbone, weights, preprocessing,
library versions), named by the hash of that key, with the key beside it in clear.

An entry is a set of parts, each an ``.npz`` of item indices and their float32 embeddings.
Rows are buffered while they are computed and written as a part every few seconds or few
thousand rows, each part atomically (temp file, then ``os.replace``): memory stays bounded,
an interrupted run keeps every part it wrote, and the disk holds only rows really computed
(a sparse full-split memmap would not: 10k random rows of Fashion-MNIST's 60k took 232 of
307 MB). A ``filelock`` around each fill keeps pytest-xdist workers, which are separate
processes, from computing the same rows twice.

Each part holds the sha256 of its entry's key digest and its own contents, written in the
same atomic file. A read checks it: a part whose bytes changed, that cannot be opened, or
that was copied from another entry is removed (saying so once) and its rows are computed
again; it is never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from harness.errors import CacheError
from harness.paths import may_write

# Bump when extraction changes in a way the other key fields do not show.
EMBEDDING_VERSION = 3  # 3: non-square images resized and cropped exactly as timm's eval transform
PART_SECONDS = 10.0
PART_ROWS = 4096

Batches = Iterator[tuple[np.ndarray, np.ndarray]]


def digest(key: dict[str, object]) -> str:
    """sha256 of the key's canonical JSON: the entry's directory name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object], mode: int = 0o600) -> None:
    """``write`` to a temp file beside ``path`` (a unique name), then rename it into place
    with permissions ``mode``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _in_order(indices: np.ndarray, batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The rows of ``batches`` (item indices, vectors) in the order of ``indices``."""
    rows = np.concatenate([r for r, _ in batches])
    vectors = np.concatenate([v for _, v in batches]).astype(np.float32, copy=False)
    order = np.argsort(rows, kind="stable")
    return vectors[order[np.searchsorted(rows[order], indices)]]


def keep(path: Path, write: Callable[[Path], object]) -> None:
    """Keep a file under the cache (its folders made, written atomically); nothing where
    the cache is read-only (``paths.cache_read_only``)."""
    if not may_write(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


class StalePart(CacheError):
    """A part failed its check and was removed; its rows must be computed again."""


@dataclass(frozen=True)
class Got:
    """What ``CacheEntry.get`` served: the rows asked for, how many it computed, and the
    compute seconds per row recorded by the parts that hold them."""

    vectors: np.ndarray
    computed: int
    seconds_per_item: float


def part_sha256(entry: str, indices: np.ndarray, vectors: np.ndarray, seconds: float) -> str:
    """The hash a part of entry ``entry`` (its key digest) records of its contents."""
    h = hashlib.sha256(entry.encode())
    for array in (indices.astype("<i8"), vectors.astype("<f4"), np.float64(seconds)):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


# What a damaged part raises when opened or read.
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


class CacheEntry:
    """Embeddings of the items of one split under one key."""

    def __init__(
        self, root: Path, key: dict[str, object], n_items: int, lock: str = "lock"
    ) -> None:
        self.key = key
        self.n_items = n_items
        self.digest = digest(key)
        self.dir = root / "embeddings" / self.digest[:2] / self.digest
        self.read_only = not may_write(self.dir / lock)
        self._lock: Any = contextlib.nullcontext() if self.read_only else FileLock(self.dir / lock)

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.npz"))

    def _discard(self, part: Path, why: str) -> None:
        """Remove a part that failed its check, saying so once."""
        if self.read_only:
            print(f"shelfbench: cache part {part} {why}; its rows are computed again, "
                  "for this run only (the cache is read-only)", file=sys.stderr)  # fmt: skip
            return
        with self._lock:
            if part.exists():
                part.unlink()
                print(
                    f"shelfbench: cache part {part} {why}; it was removed and its rows "
                    "will be computed again",
                    file=sys.stderr,
                )

    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Path]]:
        """For every cached item: its index, the part holding it, its row in that part. A
        part that cannot be opened, or holds items outside the split, is discarded."""
        parts: list[Path] = []
        items, owners, rows = ([np.zeros(0, np.int64)] for _ in range(3))
        for part in self._parts():
            try:
                with np.load(part) as data:
                    indices = data["indices"].astype(np.int64)
            except UNREADABLE as exc:
                self._discard(part, f"cannot be read ({type(exc).__name__})")
                continue
            if len(indices) and (indices.min() < 0 or indices.max() >= self.n_items):
                self._discard(part, f"holds items outside this split's 0..{self.n_items - 1}")
                continue
            items.append(indices)
            owners.append(np.full(len(indices), len(parts)))
            rows.append(np.arange(len(indices)))
            parts.append(part)
        return (
            np.concatenate(items),
            np.concatenate(owners),
            np.concatenate(rows),
            parts,
        )

    def done(self) -> np.ndarray:
        """Boolean mask over the split's items: True where the embedding is cached."""
        items = self._index()[0]
        mask = np.zeros(self.n_items, dtype=bool)
        mask[items] = True
        return mask

    def has(self, indices: np.ndarray) -> bool:
        return bool(self.done()[indices].all())

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The embeddings of ``indices``, in that order, as a float32 array; raises
        ``StalePart`` after discarding a part that fails its check."""
        return self._read(indices)[0]

    def _read(self, indices: np.ndarray) -> tuple[np.ndarray, float]:
        items, owners, rows, parts = self._index()
        where = np.full(self.n_items, -1)
        where[items] = np.arange(len(items))
        found = where[indices]
        if len(indices) == 0 or (found < 0).any():
            raise CacheError(f"{self.dir}: rows requested that were never computed")
        out = np.empty((len(indices), 0), dtype=np.float32)
        seconds = n_rows = 0.0
        stale = []
        for number in np.unique(owners[found]):
            part = parts[number]
            try:
                with np.load(part) as data:
                    vectors, held = data["vectors"], data["indices"]
                    spent, recorded = float(data["seconds"]), str(data["sha256"])
            except UNREADABLE as exc:
                self._discard(part, f"cannot be read ({type(exc).__name__})")
                stale.append(part)
                continue
            if part_sha256(self.digest, held, vectors, spent) != recorded:
                self._discard(part, "failed its content check (changed, or not this entry's)")
                stale.append(part)
                continue
            if out.shape[1] == 0:
                out = np.empty((len(indices), vectors.shape[1]), dtype=np.float32)
            wanted = owners[found] == number
            out[wanted] = vectors[rows[found[wanted]]]
            seconds, n_rows = seconds + spent, n_rows + len(held)
        if stale:
            raise StalePart(f"{self.dir}: {len(stale)} part(s) failed their check")
        return out, seconds / n_rows if n_rows else 0.0

    def get(self, indices: np.ndarray, produce: Callable[[np.ndarray], Batches]) -> Got:
        """The embeddings of ``indices``: the cached rows, checked, and the missing ones
        computed by ``produce`` (which is not called when nothing is missing). A part that
        fails its check is recomputed once; a second failure is an error. A read-only
        cache serves what it holds and keeps nothing (``served``)."""
        if self.read_only:
            return self.served(indices, produce)
        self.dir.mkdir(parents=True, exist_ok=True)
        computed = 0
        with self._lock:
            start, fresh = time.monotonic(), list[tuple[np.ndarray, np.ndarray]]()
            computed += self.fill(indices, produce, fresh)
            if computed and computed == len(indices):  # all computed now: served as computed
                return Got(
                    _in_order(indices, fresh), computed, (time.monotonic() - start) / computed
                )
            for _ in range(2):
                computed += self.fill(indices, produce)
                try:
                    vectors, per_item = self._read(indices)
                except StalePart:
                    continue
                return Got(vectors, computed, per_item)
        raise CacheError(
            f"{self.dir}: parts written just now fail their check; the disk may be failing: "
            "delete the directory and run again"
        )

    def served(self, indices: np.ndarray, produce: Callable[[np.ndarray], Batches]) -> Got:
        """From a read-only cache: the rows it holds (checked), the others computed by
        ``produce`` for this run only."""
        held = self.done()[indices] if self.dir.is_dir() else np.zeros(len(indices), bool)
        cached, per_item = np.zeros((0, 0), np.float32), 0.0
        if held.any():
            try:
                cached, per_item = self._read(indices[held])
            except StalePart:
                held[:] = False
        start = time.monotonic()
        computed = list(produce(indices[~held])) if not held.all() else []
        width = cached.shape[1] if held.any() else computed[0][1].shape[1] if computed else 0
        out = np.empty((len(indices), width), np.float32)
        if held.any():
            out[held] = cached
        position = np.full(self.n_items, -1)
        position[indices] = np.arange(len(indices))
        for rows, batch in computed:
            out[position[rows]] = batch
        n_new = int((~held).sum())
        if n_new:
            per_item = (per_item * held.sum() + time.monotonic() - start) / len(indices)
        return Got(out, n_new, per_item)

    def fill(
        self,
        indices: np.ndarray,
        produce: Callable[[np.ndarray], Batches],
        fresh: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> int:
        """Compute the missing rows among ``indices`` with ``produce``; return how many
        (and add them to ``fresh``, if given). Parts are hashed and written by a thread
        of their own, so that the device computes the next batches meanwhile."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            missing = indices[~self.done()[indices]]
            if len(missing) == 0:
                return 0
            if not (self.dir / "key.json").exists():
                text = json.dumps(self.key, indent=1, sort_keys=True)
                atomic_write(self.dir / "key.json", lambda p: p.write_text(text))
            buffered: list[tuple[np.ndarray, np.ndarray]] = []
            last = time.monotonic()
            with ThreadPoolExecutor(1, thread_name_prefix="shelfbench-cache") as writer:
                written = []
                try:
                    for rows, batch in produce(missing):
                        buffered.append((rows, batch))
                        if fresh is not None:
                            fresh.append((rows, batch))
                        full = sum(len(r) for r, _ in buffered) >= PART_ROWS
                        if full or time.monotonic() - last > PART_SECONDS:
                            seconds = time.monotonic() - last
                            written.append(writer.submit(self._write_part, buffered, seconds))
                            buffered, last = [], time.monotonic()
                finally:  # an interrupted run keeps every batch it finished
                    self._write_part(buffered, time.monotonic() - last)
                    for part in written:
                        part.result()
            return len(missing)

    def _write_part(self, buffered: list[tuple[np.ndarray, np.ndarray]], seconds: float) -> None:
        if not buffered:
            return
        indices = np.concatenate([rows for rows, _ in buffered]).astype(np.int64)
        vectors = np.concatenate([batch for _, batch in buffered]).astype(np.float32)
        sha256 = part_sha256(self.digest, indices, vectors, seconds)

        def save(path: Path) -> None:
            with path.open("wb") as f:
                np.savez(f, indices=indices, vectors=vectors, seconds=seconds, sha256=sha256)

        atomic_write(self.dir / f"part-{uuid.uuid4().hex}.npz", save)
