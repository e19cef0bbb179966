"""Off-the-shelf: frozen embeddings, cosine retrieval and kNN classification, by exact
search or through the approximate index a suite declares (``harness.index``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import index
from harness.metrics import deepest, vote_ranks
from harness.search import Ranker, rank, relevance
from harness.settings import Count, Positive, Strings, Table, Tolerance
from harness.stats import ranked_items, retrieval_items
from harness.strategies.base import CLASSIFICATION, RETRIEVAL, Features, Outcome, strategy

# Neighbours kept per query for the report's galleries.
SHOWN = 5


@dataclass(frozen=True)
class Ranking:
    """The ranked gallery of each query: which test items query (``queries``), the top
    ``scores`` and the labels of those neighbours, and the per-query retrieval metrics
    (queries with no relevant item in the gallery are left out of them) with, for those
    queries, their position among the test items, the rank of their first relevant
    neighbour (-1: none within the ranking) and their top five neighbours' positions among
    the gallery's items (train under the split protocol, else test) and relevance."""

    queries: np.ndarray
    scores: np.ndarray
    neighbours: np.ndarray
    neighbour_labels: np.ndarray
    items: dict[str, np.ndarray]


def retrieval(
    data: Features, train: np.ndarray, test: np.ndarray, depth: int, ranker: Ranker = rank
) -> Ranking:
    """Rank the gallery for each query as the dataset's protocol says, deep enough for
    ``depth``, for MAP@R and for every registered metric's ``depth``, with ``ranker``
    (exact search unless an index is given). ``train``/``test`` are the embeddings to use
    (the cached ones, or a head's). A neighbour an index did not find (-1) is never
    relevant and votes for no class."""
    test_ids = data.test_labels if data.test_ids is None else data.test_ids
    queries = np.arange(len(test))
    if data.protocol == "split":
        gallery = np.arange(len(train))
        vectors, ids = train, data.train_labels if data.train_ids is None else data.train_ids
        labels = data.train_labels
    else:
        gallery = queries
        if data.protocol == "query-gallery":
            assert data.test_query is not None  # a query-gallery dataset marks its queries
            queries, gallery = np.flatnonzero(data.test_query), np.flatnonzero(~data.test_query)
        vectors, ids, labels = test[gallery], test_ids[gallery], data.test_labels[gallery]
    self_in_gallery = data.protocol == "leave-one-out"
    _, counts = np.unique(ids, return_counts=True)
    depth = max(depth, int(counts.max()), deepest())  # every registered metric's ranks
    depth = min(depth, len(gallery) - self_in_gallery)
    scores, indices = ranker(test[queries], vectors, depth + self_in_gallery)
    if self_in_gallery:
        scores, indices = _drop_self(scores, indices, queries)
    found = indices >= 0
    relevant, n_relevant = relevance(test_ids[queries], ids, indices)
    relevant &= found
    n_relevant = n_relevant - self_in_gallery
    keep = n_relevant > 0
    relevant, n_relevant = relevant[keep], n_relevant[keep]
    neighbour_labels = np.where(found, labels[indices], -1)
    top = indices[keep, :SHOWN]
    shown = {  # what a report's gallery shows: positions in the test and gallery features
        "query": queries[keep],
        "first_hit": np.where(relevant.any(axis=1), relevant.argmax(axis=1), -1),
        "top5": np.where(top >= 0, gallery[np.maximum(top, 0)], -1),
        "top5_relevant": relevant[:, :SHOWN],
    }
    items = {**retrieval_items(relevant, n_relevant), **shown}
    return Ranking(queries, scores, indices, neighbour_labels, items)


def _drop_self(
    scores: np.ndarray, indices: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query from its own ranking (or its last entry, if it is not in it)."""
    drop = indices == queries[:, None]
    drop[~drop.any(axis=1), -1] = True
    shape = (len(queries), indices.shape[1] - 1)
    return scores[~drop].reshape(shape), indices[~drop].reshape(shape)


class KnnSettings(Table):
    """``[strategy.knn]``: the vote, and the approximate index to rank through."""

    neighbours: Count = 20
    temperature: Positive = 0.07
    index: str | Strings | None = None  # "exact", "faiss:HNSW32", "milvus:HNSW"
    search: dict[str, Any] | None = None  # the engine's search keys (harness.index)
    build: dict[str, Any] | None = None  # the engine's build keys
    options: dict[str, Any] | None = None  # the engine's connection: { uri = "..." }
    max_index_loss: Tolerance | None = None


@strategy(
    "knn",
    CLASSIFICATION + RETRIEVAL,
    main_metric="mmp@5",
    settings=KnnSettings,
    variants=index.variants,
    labels_from="gallery",
)
def knn(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Retrieval (as the dataset's protocol says) and a similarity-weighted kNN vote.

    The vote follows DINO's kNN evaluation: each of the ``neighbours`` nearest gallery
    items adds exp(cosine / temperature) to its class. Under leave-one-out and
    query-gallery the vote is among the other test items, for the queries. With an
    ``index`` (``faiss:HNSW32``, ``milvus:HNSW``; ``search`` its search parameters) the
    metrics are those under the index, and the exact ones are kept as its reference.
    """
    start = time.perf_counter()
    k = params["neighbours"]
    (setting,) = index.settings(params)
    exact = retrieval(data, data.train, data.test, k)
    ranking, reference, report = exact, None, None
    if setting is not None:
        searcher = index.Searcher(setting)
        ranking = retrieval(data, data.train, data.test, k, searcher)
        reference = vote(data, exact, params)
        depth = exact.neighbours.shape[1]
        report = {
            "engine": setting.engine,
            "spec": setting.spec,
            "search": setting.search,
            "build": setting.build,
            "neighbour_recall": {
                k: index.neighbour_recall(ranking.neighbours, exact.neighbours, k)
                for k in (10, depth)
            },
            **searcher.cost,
        }
    searched = time.perf_counter()
    items = vote(data, ranking, params)
    return Outcome(
        items,
        {"fit": searched - start, "eval": time.perf_counter() - searched},
        reference=reference,
        index=report,
    )


def vote(data: Features, ranking: Ranking, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-item results of the kNN vote over ``ranking``, with its retrieval results."""
    k = params["neighbours"]
    weights = np.exp(ranking.scores[:, :k] / params["temperature"])
    labels = data.test_labels[ranking.queries]
    predicted, rank = vote_ranks(labels, ranking.neighbour_labels[:, :k], weights)
    return {**ranked_items(labels, predicted, rank), **ranking.items}
