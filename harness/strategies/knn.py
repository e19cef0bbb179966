"""Off-the-shelf: frozen embeddings, exact cosine retrieval and kNN classification."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness import metrics
from harness.search import rank, relevance
from harness.stats import classification_items
from harness.strategies.base import CLASSIFICATION, RETRIEVAL, Features, Outcome, strategy


def retrieval(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    depth: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rank the train gallery for each test query, deep enough for MAP@R; return scores,
    indices and the per-query retrieval metrics."""
    depth = max(depth, int(np.bincount(train_labels).max()), 10)
    scores, indices = rank(test, train, depth)
    relevant, n_relevant = relevance(test_labels, train_labels, indices)
    items = {
        "recall@1": metrics.recall_at_k(relevant, 1),
        "recall@5": metrics.recall_at_k(relevant, 5),
        "mmp@5": metrics.mmp_at_k(relevant, n_relevant, 5),
        "map@r": metrics.map_at_r(relevant, n_relevant),
        "mrr@10": metrics.mrr_at_k(relevant, 10),
        "ndcg@10": metrics.ndcg_at_k(relevant, n_relevant, 10),
    }
    return scores, indices, items


@strategy("knn", CLASSIFICATION + RETRIEVAL, main_metric="mmp@5", neighbours=20, temperature=0.07)
def knn(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Retrieval (query = test, gallery = train) and a similarity-weighted kNN vote.

    The vote follows DINO's kNN evaluation: each of the ``neighbours`` nearest gallery
    items adds exp(cosine / temperature) to its class.
    """
    start = time.perf_counter()
    k = params["neighbours"]
    scores, indices, ranked = retrieval(
        data.train, data.train_labels, data.test, data.test_labels, k
    )
    searched = time.perf_counter()
    weights = np.exp(scores[:, :k] / params["temperature"])
    votes = np.zeros((len(data.test), data.n_classes))
    np.add.at(
        votes, (np.arange(len(data.test))[:, None], data.train_labels[indices[:, :k]]), weights
    )
    items = {**classification_items(data.test_labels, votes), **ranked}
    return Outcome(items, {"fit": searched - start, "eval": time.perf_counter() - searched})
