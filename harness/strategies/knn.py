"""Off-the-shelf: frozen embeddings, exact cosine retrieval and kNN classification."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.metrics import vote_ranks
from harness.search import rank, relevance
from harness.stats import ranked_items, retrieval_items
from harness.strategies.base import CLASSIFICATION, RETRIEVAL, Features, Outcome, strategy


@dataclass(frozen=True)
class Ranking:
    """The ranked gallery of each query: which test items query (``queries``), the top
    ``scores`` and the labels of those neighbours, and the per-query retrieval metrics
    (queries with no relevant item in the gallery are left out of them)."""

    queries: np.ndarray
    scores: np.ndarray
    neighbour_labels: np.ndarray
    items: dict[str, np.ndarray]


def retrieval(data: Features, train: np.ndarray, test: np.ndarray, depth: int) -> Ranking:
    """Rank the gallery for each query as the dataset's protocol says, deep enough for
    MAP@R. ``train``/``test`` are the embeddings to use (the cached ones, or a head's)."""
    test_ids = data.test_labels if data.test_ids is None else data.test_ids
    queries = np.arange(len(test))
    if data.protocol == "split":
        gallery = np.arange(len(train))
        vectors, ids = train, data.train_labels if data.train_ids is None else data.train_ids
        labels = data.train_labels
    else:
        gallery = queries
        if data.protocol == "query-gallery":
            queries, gallery = np.flatnonzero(data.test_query), np.flatnonzero(~data.test_query)
        vectors, ids, labels = test[gallery], test_ids[gallery], data.test_labels[gallery]
    self_in_gallery = data.protocol == "leave-one-out"
    _, counts = np.unique(ids, return_counts=True)
    depth = min(max(depth, int(counts.max()), 10), len(gallery) - self_in_gallery)
    scores, indices = rank(test[queries], vectors, depth + self_in_gallery)
    if self_in_gallery:
        scores, indices = _drop_self(scores, indices, queries)
    relevant, n_relevant = relevance(test_ids[queries], ids, indices)
    n_relevant = n_relevant - self_in_gallery
    keep = n_relevant > 0
    relevant, n_relevant = relevant[keep], n_relevant[keep]
    return Ranking(queries, scores, labels[indices], retrieval_items(relevant, n_relevant))


def _drop_self(
    scores: np.ndarray, indices: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query from its own ranking (or its last entry, if it is not in it)."""
    drop = indices == queries[:, None]
    drop[~drop.any(axis=1), -1] = True
    shape = (len(queries), indices.shape[1] - 1)
    return scores[~drop].reshape(shape), indices[~drop].reshape(shape)


@strategy("knn", CLASSIFICATION + RETRIEVAL, main_metric="mmp@5", neighbours=20, temperature=0.07)
def knn(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Retrieval (as the dataset's protocol says) and a similarity-weighted kNN vote.

    The vote follows DINO's kNN evaluation: each of the ``neighbours`` nearest gallery
    items adds exp(cosine / temperature) to its class. Under leave-one-out and
    query-gallery the vote is among the other test items, for the queries.
    """
    start = time.perf_counter()
    k = params["neighbours"]
    ranking = retrieval(data, data.train, data.test, k)
    searched = time.perf_counter()
    weights = np.exp(ranking.scores[:, :k] / params["temperature"])
    labels = data.test_labels[ranking.queries]
    predicted, rank = vote_ranks(labels, ranking.neighbour_labels[:, :k], weights)
    items = {**ranked_items(labels, predicted, rank), **ranking.items}
    return Outcome(items, {"fit": searched - start, "eval": time.perf_counter() - searched})
