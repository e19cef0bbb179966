"""Nearest-neighbour ranking of a gallery for each query: exact cosine similarity.

faiss ``IndexFlatIP`` (exact inner product) over L2-normalised vectors does the ranking,
one gallery block at a time, so a 1M-item gallery is never copied whole into an index nor
scored as one query × gallery matrix; the blocks' top-k lists are merged. Measured on one
2-vCPU machine with its BLAS checked (threadpoolctl) and no ``OPENBLAS_CORETYPE``: faiss
ranked 2k × 10k × 1280 2.8-4.8x faster than numpy with the same results. But faiss-cpu
1.15.1 bundles OpenBLAS 0.3.15, which does not know every newer CPU and then runs its
generic Prescott kernel (2.7x slower than numpy on a 2-vCPU AVX-512 Xeon, 2026-11-28),
or Barcelona on an AMD CPU (slower than numpy on a 2-vCPU AMD EPYC, 2026-12-05):
``engine()`` checks which kernel it loaded and ranks with ``numpy_rank`` in that case.
On a GPU, ``torch_rank`` scores and takes the top k there. On a CPU that multiplies bf16
faster (``runtime.cpu_has_bf16``), ``bf16_rank`` finds candidates with bf16 matmuls and
scores them again in fp32, with a proven bound on what bf16 can get wrong, for the same
top k. ``numpy_rank`` is the oracle the tests and benchmarks compare the others with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# (queries, gallery, k) -> top-k (scores, gallery indices) per query: ``rank`` or an index.
Ranker = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

# Gallery items indexed at a time: 2^18 × 768 floats is 800 MB.
GALLERY_BLOCK = 1 << 18
# numpy_rank: similarities are computed for blocks of queries, this many floats at a time.
BLOCK_FLOATS = 1 << 25
# bf16_rank re-scores candidates for blocks of queries holding this many gathered floats
# (4 MB, which stays in cache from the gather to the product: 2,000 queries' 160
# candidates of 768 in 0.17 s against 0.40 s at BLOCK_FLOATS; 2-vCPU AMD EPYC,
# 2026-12-05), and normalises the gallery to bf16 this many rows at a time (``_bf16_unit``).
RESCORE_FLOATS, UNIT_ROWS = 1 << 20, 8192


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
ENGINE_DISTRIBUTIONS = {
    "faiss": ("faiss-cpu",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "bf16": ("torch", "faiss-cpu"),
}

# OpenBLAS's fallback kernels for an x86-64 CPU it does not recognise: Intel's, and AMD's
# (faiss's OpenBLAS 0.3.15 on a 2-vCPU AMD EPYC, 2026-12-05: 0.87-0.91 s for 2k x 10k x
# 1280, top 1050, where numpy's SkylakeX kernel took 0.34-0.77 s).
GENERIC_KERNELS = {"Prescott", "Barcelona"}


def engine() -> str:
    """``torch`` on a GPU (and where ``runtime.torch_paths()`` asks for the GPU's paths);
    ``bf16`` (``bf16_rank``) on a CPU that multiplies bf16 faster; else ``faiss``, or
    ``numpy`` where faiss's own OpenBLAS runs a generic kernel on this CPU (read with
    threadpoolctl after faiss is loaded)."""
    from harness.runtime import cpu_has_bf16, torch_paths

    if torch_paths():
        return "torch"
    return "bf16" if cpu_has_bf16() else _host_engine()


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
    if chosen == "bf16":
        return bf16_rank(queries, gallery, k, block)
    return fp32_rank(queries, gallery, k, block)


def fp32_rank(
    queries: np.ndarray, gallery: np.ndarray, k: int, block: int = GALLERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` in fp32 on the CPU: faiss, or numpy where faiss's BLAS is generic."""
    if _host_engine() == "numpy":
        return numpy_rank(queries, gallery, k)
    return faiss_rank(queries, gallery, k, block)


# Rounding to bf16 (8 significant bits) moves a value by at most this share of it; fp32's
# (24 bits) by this one.
BF16_UNIT, FP32_UNIT = 2.0**-8, 2.0**-24
# A bf16 score s' is within SCORE_SHARE |s'| + bf16_error(q) of the exact cosine.
SCORE_SHARE = BF16_UNIT / (1 - BF16_UNIT)
# bf16_rank keeps this many times k candidates per query, and runs only where the gallery
# holds SHALLOW times as many items (else re-scoring the candidates costs what it saves).
CANDIDATES, SHALLOW = 8, 64


def bf16_error(queries: np.ndarray, gallery_error: float) -> np.ndarray:
    """Per L2-normalised query q, the part of the bound on |s' - q.g| that does not scale
    with s', over every unit (or zero) gallery item g whose bf16 copy g' is at most
    ``gallery_error`` from g, where s' is q.g as a bf16 matmul returns it: q and g rounded
    to bf16 (q', g'), products exact in fp32, summed in fp32 in any order (error at most
    y |q'||g'|, y = d 2^-24 rounded up), the sum x rounded to bf16 (|s' - x| <= u |x| and
    so <= u / (1 - u) |s'|, u = 2^-8: ``SCORE_SHARE``). By Cauchy-Schwarz on
    q'.g' - q.g = q'.(g' - g) + (q' - q).g:

        |s' - q.g| <= SCORE_SHARE |s'| + y |q'| (1 + gallery_error)
                      + |q'| gallery_error + |q' - q|

    This returns all but the first term, with 1e-6 for subnormals, which bf16 hardware
    may flush to zero."""
    rounded = _bf16_rounded(queries)
    norm = np.linalg.norm(rounded, axis=1).astype(np.float64)
    error = np.linalg.norm(rounded - queries, axis=1).astype(np.float64)
    summed = 1.01 * queries.shape[1] * FP32_UNIT
    return summed * norm * (1 + gallery_error) + norm * gallery_error + error + 1e-6


def _bf16_rounded(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bf16 (to nearest, as torch rounds), back in fp32."""
    import torch

    return torch.from_numpy(x).bfloat16().float().numpy()


def bf16_rank(
    queries: np.ndarray, gallery: np.ndarray, k: int, block: int = GALLERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """``rank``'s answer from bf16 matmuls, where a CPU multiplies bf16 faster than fp32.

    Each query keeps its ``CANDIDATES * k`` best gallery items by bf16 score s', each
    within d(s') = ``SCORE_SHARE`` |s'| + ``bf16_error`` of the exact score. The k-th exact
    score is at least t = s'_k - d(s'_k), the k-th bf16 score's lower bound; a candidate
    whose upper bound s' + d(s') is below t cannot be in the exact top k, nor can any item
    left out when the last candidate's is (the bound grows with s'). The rest are scored
    again in fp32 and ordered as ``rank`` orders. A query whose last candidate could still
    be in its top k is ranked again in fp32 (``fp32_rank``), as is every query where the
    gallery holds fewer than ``SHALLOW`` times the candidates."""
    import torch

    k = min(k, len(gallery))
    keep = CANDIDATES * k
    if keep * SHALLOW > len(gallery):
        return fp32_rank(queries, gallery, k, block)
    queries = l2_normalise(queries)
    q = torch.from_numpy(queries).bfloat16()
    parts = ((s, _bf16_unit(gallery[s : s + block])) for s in range(0, len(gallery), block))
    # bf16 matmuls ran fastest at ~512 queries (2^18 gallery items): 4x the fp32 block
    scores, indices = _blockwise_top(q, parts, keep, 4 * BLOCK_FLOATS)
    approx = scores.double().numpy()
    # |g' - g| <= u |g| for a unit g (and 1e-6 for torch's and numpy's norms' difference)
    error = bf16_error(queries, BF16_UNIT + 1e-6)[:, None]
    lowest = approx[:, k - 1 : k] - SCORE_SHARE * np.abs(approx[:, k - 1 : k]) - error
    possible = approx + SCORE_SHARE * np.abs(approx) + error >= lowest
    return _rescored(queries, gallery, k, block, indices.numpy(), possible)


def _bf16_unit(vectors: np.ndarray) -> torch.Tensor:
    """``vectors`` L2-normalised by torch (6x numpy's speed), in bf16: each fp32 quotient
    rounded as it is written, with no fp32 copy, ``UNIT_ROWS`` rows at a time (each
    chunk's norms and quotients while it is in cache). A million × 768 in four 2^18-item
    blocks: 0.71 s, against 3.7 s a whole block at a time, the same bits (2-vCPU AMD EPYC,
    2026-12-05); an fp32 copy of each block first had taken longer still."""
    import torch

    raw = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    out = torch.empty(raw.shape, dtype=torch.bfloat16)
    for start in range(0, len(raw), UNIT_ROWS):
        part = raw[start : start + UNIT_ROWS]
        norms = torch.linalg.vector_norm(part, dim=1, keepdim=True)
        # zero rows stay 0
        torch.div(part, torch.where(norms > 0, norms, 1.0), out=out[start : start + UNIT_ROWS])
    return out


def _blockwise_top(
    q: torch.Tensor, parts: Iterator[tuple[int, torch.Tensor]], keep: int, floats: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``q``'s ``keep`` best (scores, gallery indices) by inner product over
    the gallery ``parts`` (each block with its first item's index), the blocks' lists
    merged as they come; at most about ``floats`` scores at once."""
    import torch

    scores = torch.full((len(q), 0), -torch.inf, dtype=q.dtype, device=q.device)
    indices = torch.zeros((len(q), 0), dtype=torch.int64, device=q.device)
    # One buffer takes every tile of scores: a fresh tile each time (256 MB of bf16) is
    # fresh memory to fault in. catalogue-1m: 0.63 M page faults and 10 s of system time
    # against 5.4 M and 20 s, 53-54 s against 60.5 s (2-vCPU AMD EPYC, 2026-12-06).
    tiles = torch.empty(0, dtype=q.dtype, device=q.device)
    for start, part in parts:
        rows = max(1, floats // len(part))
        size = min(rows, len(q)) * len(part)
        if len(tiles) < size:
            tiles = torch.empty(size, dtype=q.dtype, device=q.device)
        found = []
        for i in range(0, len(q), rows):
            chunk = q[i : i + rows]
            tile = tiles[: len(chunk) * len(part)].view(len(chunk), len(part))
            torch.matmul(chunk, part.T, out=tile)
            found.append(tile.topk(min(keep, len(part)), dim=1))
        merged_scores = torch.cat([scores, torch.cat([f.values for f in found])], dim=1)
        merged = torch.cat([indices, torch.cat([f.indices for f in found]) + start], dim=1)
        scores, at = merged_scores.topk(min(keep, merged.shape[1]), dim=1)
        indices = merged.gather(1, at)
    return scores, indices


def _rescored(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    block: int,
    candidates: np.ndarray,
    possible: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top ``k`` of its ``possible`` ``candidates`` (a prefix of each row) by
    fp32 cosine; by ``fp32_rank`` where its last candidate is possible and the gallery
    holds more."""
    counts = possible.sum(axis=1)
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    out_indices = np.empty((len(queries), k), dtype=np.int64)
    complete = candidates.shape[1] == len(gallery)
    proven = np.flatnonzero(complete | (counts < candidates.shape[1]))
    rows = max(1, RESCORE_FLOATS // (candidates.shape[1] * queries.shape[1]))
    for start in range(0, len(proven), rows):
        chunk = proven[start : start + rows]
        width = int(counts[chunk].max())
        chosen = candidates[chunk, :width]
        vectors = l2_normalise(gallery[chosen.ravel()]).reshape(*chosen.shape, -1)
        exact = np.matmul(vectors, queries[chunk, :, None])[..., 0]
        exact[np.arange(width) >= counts[chunk, None]] = -np.inf
        out_scores[chunk], out_indices[chunk] = _ordered(exact, chosen, k)
    again = np.setdiff1d(np.arange(len(queries)), proven)
    if len(again):
        out_scores[again], out_indices[again] = fp32_rank(queries[again], gallery, k, block)
    return out_scores, out_indices


def torch_rank(
    queries: np.ndarray, gallery: np.ndarray, k: int, dev: str, block: int = GALLERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` by fp32 matmul and top-k on ``dev``, for blocks of queries against one
    gallery block at a time (at most ``BLOCK_FLOATS`` scores at once), merged on the
    device; equal scores are put in gallery order on the host."""
    import torch

    k = min(k, len(gallery))
    q = torch.from_numpy(l2_normalise(queries)).to(dev)
    parts = (
        (s, torch.from_numpy(l2_normalise(gallery[s : s + block])).to(dev))
        for s in range(0, len(gallery), block)
    )
    scores, indices = _blockwise_top(q, parts, k, BLOCK_FLOATS)
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
