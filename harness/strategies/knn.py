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


@strategy("knn", CLASSIFICATION + RETRIEVAL, main_metric="mmp@5", neighbours=20, temperature=0.07)
def knn(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Retrieval (query = test, gallery = train) and a similarity-weighted kNN vote.

    The vote follows DINO's kNN evaluation: each of the ``neighbours`` nearest gallery
    items adds exp(cosine / temperature) to its class.
    """
    start = time.perf_counter()
    counts = np.bincount(data.train_labels, minlength=data.n_classes)
    depth = max(int(counts.max()), params["neighbours"], 10)
    scores, indices = rank(data.test, data.train, depth)
    searched = time.perf_counter()

    relevant, n_relevant = relevance(data.test_labels, data.train_labels, indices)
    k = params["neighbours"]
    weights = np.exp(scores[:, :k] / params["temperature"])
    votes = np.zeros((len(data.test), data.n_classes))
    np.add.at(
        votes, (np.arange(len(data.test))[:, None], data.train_labels[indices[:, :k]]), weights
    )
    items = {
        **classification_items(data.test_labels, votes),
        "recall@1": metrics.recall_at_k(relevant, 1),
        "recall@5": metrics.recall_at_k(relevant, 5),
        "mmp@5": metrics.mmp_at_k(relevant, n_relevant, 5),
        "map@r": metrics.map_at_r(relevant, n_relevant),
        "mrr@10": metrics.mrr_at_k(relevant, 10),
        "ndcg@10": metrics.ndcg_at_k(relevant, n_relevant, 10),
    }
    return Outcome(items, {"fit": searched - start, "eval": time.perf_counter() - searched})
