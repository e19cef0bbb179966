"""Which retrieval results a report shows as pictures: a seeded sample of queries and the
worst-ranked ones, and, against an incumbent or a baseline, the queries whose first
relevant neighbour moved most. Items are dataset indices (see ``cell.gallery_items``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.records import Changed, Gallery, Shown

SHOWN_QUERIES = 6  # per kind: sampled, worst, changed
SEED = 0


def has_gallery(items: dict[str, Any]) -> bool:
    return all(key in items for key in ("query", "first_hit", "top5", "top5_relevant"))


def _rank(first_hit: np.ndarray) -> np.ndarray:
    """The first relevant neighbour's rank, with 'none in the ranking' last."""
    first_hit = np.asarray(first_hit)
    return np.where(first_hit < 0, np.iinfo(np.int64).max, first_hit)


def _rows(items: dict[str, Any], chosen: np.ndarray) -> Shown:
    return Shown(
        np.asarray(items["query"])[chosen].tolist(),
        np.asarray(items["first_hit"])[chosen].tolist(),
        np.asarray(items["top5"])[chosen].tolist(),
        np.asarray(items["top5_relevant"])[chosen].astype(bool).tolist(),
    )


def sample_and_worst(items: dict[str, Any], n: int = SHOWN_QUERIES) -> Gallery:
    """``n`` seeded random queries and the ``n`` whose first relevant hit ranks lowest."""
    count = len(items["query"])
    sample = np.random.default_rng(SEED).permutation(count)[:n]
    rest = np.setdiff1d(np.arange(count), sample)
    worst = rest[np.argsort(-_rank(np.asarray(items["first_hit"])[rest]), kind="stable")[:n]]
    return Gallery(_rows(items, np.sort(sample)), _rows(items, worst))


def changed(
    old: dict[str, Any], new: dict[str, Any], against: str, n: int = SHOWN_QUERIES
) -> Changed | None:
    """The ``n`` queries (in both runs) whose first relevant neighbour moved most, with
    both runs' neighbours; None when either run kept no gallery items, or none moved."""
    if not (has_gallery(old) and has_gallery(new)):
        return None
    common, in_old, in_new = np.intersect1d(old["query"], new["query"], return_indices=True)
    if not len(common):
        return None
    before = np.asarray(old["first_hit"])[in_old]
    after = np.asarray(new["first_hit"])[in_new]
    depth = int(max(np.max(before), np.max(after))) + 1
    moved = np.where(before < 0, depth, before) - np.where(after < 0, depth, after)
    order = np.argsort(-np.abs(moved), kind="stable")[:n]
    order = order[moved[order] != 0]
    if not len(order):
        return None
    return Changed(against, _rows(old, in_old[order]), _rows(new, in_new[order]))
