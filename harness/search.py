"""Nearest-neighbour ranking of a gallery for each query: cosine similarity with faiss."""

from __future__ import annotations

import numpy as np

from harness.extract import cpu_threads


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def rank(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery items per query by cosine similarity: ``(scores, indices)``.

    Exact search (faiss ``IndexFlatIP`` on L2-normalised vectors). Within the returned
    list, equal scores are ordered by ascending gallery index; which of several items tied
    at the k-th place make the list is faiss's choice.
    """
    import faiss

    faiss.omp_set_num_threads(cpu_threads())
    gallery = l2_normalise(gallery)
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    scores, indices = index.search(l2_normalise(queries), min(k, len(gallery)))
    order = np.lexsort((indices, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


def relevance(
    query_labels: np.ndarray, gallery_labels: np.ndarray, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked relevance (same label) and R_q, the number of relevant gallery items."""
    relevant = gallery_labels[indices] == query_labels[:, None]
    counts = np.bincount(gallery_labels, minlength=int(query_labels.max(initial=0)) + 1)
    return relevant, counts[query_labels]
