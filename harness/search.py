"""Nearest-neighbour ranking of a gallery for each query: exact cosine similarity.

faiss ``IndexFlatIP`` (exact inner product) over L2-normalised vectors does the ranking,
one gallery block at a time, so a 1M-item gallery is never copied whole into an index nor
scored as one query × gallery matrix; the blocks' top-k lists are merged. Measured on one
2-vCPU machine with its BLAS checked (threadpoolctl) and no ``OPENBLAS_CORETYPE``: faiss
ranked 2k × 10k × 1280 2.8-4.8x faster than numpy with the same results. But faiss-cpu
1.15.1 bundles OpenBLAS 0.3.15, which does not know every newer CPU and then runs its
generic Prescott kernel (2.7x slower than numpy on a 2-vCPU AVX-512 Xeon, 2026-11-28):
``engine()`` checks which kernel it loaded and ranks with ``numpy_rank`` in that case.
On a GPU, ``torch_rank`` scores and takes the top k there. ``numpy_rank`` is the oracle the
tests and benchmarks compare the others with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

# (queries, gallery, k) -> top-k (scores, gallery indices) per query: ``rank`` or an index.
Ranker = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

# Gallery items indexed at a time: 2^18 × 768 floats is 800 MB.
GALLERY_BLOCK = 1 << 18
# numpy_rank: similarities are computed for blocks of queries, this many floats at a time.
BLOCK_FLOATS = 1 << 25


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _ordered(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row by score, equal scores by ascending gallery index."""
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


# The packages each exact ranking engine (``engine()``) computes with.
ENGINE_DISTRIBUTIONS = {"faiss": ("faiss-cpu",), "torch": ("torch",), "numpy": ("numpy",)}

# OpenBLAS's fallback kernel for an x86-64 CPU it does not recognise.
GENERIC_KERNELS = {"Prescott"}


def engine() -> str:
    """``torch`` on a GPU (and where ``runtime.torch_paths()`` asks for the GPU's paths);
    else ``faiss``, or ``numpy`` where faiss's own OpenBLAS runs a generic kernel on this
    CPU (read with threadpoolctl after faiss is loaded)."""
    from harness.runtime import torch_paths

    return "torch" if torch_paths() else _host_engine()


@functools.cache
def _host_engine() -> str:
    import faiss
    from threadpoolctl import threadpool_info

    for library in threadpool_info():
        in_faiss = faiss.__name__ in library["filepath"]
        if in_faiss and library.get("architecture") in GENERIC_KERNELS:
            return "numpy"
    return "faiss"


def rank(
    queries: np.ndarray, gallery: np.ndarray, k: int, block: int = GALLERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery items per query by cosine similarity: ``(scores, indices)``.

    Exact: the similarity q·g of L2-normalised vectors for every pair (faiss
    ``IndexFlatIP``, or ``numpy_rank`` where ``engine()`` says so). Within the returned
    list, equal scores are ordered by ascending gallery index; which of several items tied
    at the k-th place make the list is unspecified.
    """
    chosen = engine()
    if chosen == "torch":
        from harness.runtime import device

        return torch_rank(queries, gallery, k, device(), block)
    if chosen == "numpy":
        return numpy_rank(queries, gallery, k)
    return faiss_rank(queries, gallery, k, block)


def torch_rank(
    queries: np.ndarray, gallery: np.ndarray, k: int, dev: str, block: int = GALLERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` by fp32 matmul and top-k on ``dev``, for blocks of queries against one
    gallery block at a time (at most ``BLOCK_FLOATS`` scores at once), merged on the
    device; equal scores are put in gallery order on the host."""
    import torch

    k = min(k, len(gallery))
    q = torch.from_numpy(l2_normalise(queries)).to(dev)
    scores = torch.full((len(q), 0), -torch.inf, device=dev)
    indices = torch.zeros((len(q), 0), dtype=torch.int64, device=dev)
    for start in range(0, len(gallery), block):
        part = torch.from_numpy(l2_normalise(gallery[start : start + block])).to(dev)
        rows = max(1, BLOCK_FLOATS // len(part))
        found = [
            (q[i : i + rows] @ part.T).topk(min(k, len(part)), dim=1)
            for i in range(0, len(q), rows)
        ]
        merged_scores = torch.cat([scores, torch.cat([f.values for f in found])], dim=1)
        merged = torch.cat([indices, torch.cat([f.indices for f in found]) + start], dim=1)
        scores, at = merged_scores.topk(min(k, merged.shape[1]), dim=1)
        indices = merged.gather(1, at)
    return _ordered(scores.cpu().numpy(), indices.cpu().numpy(), k)


def faiss_rank(
    queries: np.ndarray, gallery: np.ndarray, k: int, block: int = GALLERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` by faiss ``IndexFlatIP``, one gallery block at a time."""
    import faiss

    from harness.runtime import cpu_threads

    faiss.omp_set_num_threads(cpu_threads())
    queries = l2_normalise(queries)
    k = min(k, len(gallery))
    scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    indices = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(gallery), block):
        part = l2_normalise(gallery[start : start + block])
        index = faiss.IndexFlatIP(part.shape[1])
        index.add(part)
        found_scores, found = index.search(queries, min(k, len(part)))
        scores, indices = _ordered(
            np.concatenate([scores, found_scores], axis=1),
            np.concatenate([indices, found + start], axis=1),
            k,
        )
    return scores, indices


def numpy_rank(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` in plain numpy (matmul, argpartition, lexsort): the oracle."""
    gallery = l2_normalise(gallery)
    queries = l2_normalise(queries)
    k = min(k, len(gallery))
    scores = np.empty((len(queries), k), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    block = max(1, BLOCK_FLOATS // max(1, len(gallery)))
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ gallery.T
        if k < len(gallery):
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(gallery)), sims.shape)
        top_scores = np.take_along_axis(sims, top, 1)
        order = np.lexsort((top, -top_scores), axis=1)
        scores[start : start + block] = np.take_along_axis(top_scores, order, 1)
        indices[start : start + block] = np.take_along_axis(top, order, 1)
    return scores, indices


def relevance(
    query_labels: np.ndarray, gallery_labels: np.ndarray, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked relevance (same label) and R_q, the number of relevant gallery items."""
    relevant = gallery_labels[indices] == query_labels[:, None]
    counts = np.bincount(gallery_labels, minlength=int(query_labels.max(initial=0)) + 1)
    return relevant, counts[query_labels]
