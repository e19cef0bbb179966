"""All metrics, as pure numpy functions over labels, scores and ranked relevance.

Most metrics are means of a per-item value; those functions return the per-item array
(one value per test item or query), so that confidence intervals can resample items.
The metric itself is its mean. Macro-F1 is not a mean of items and is returned whole.

Retrieval inputs: ``relevance[q, i]`` is True when the i-th ranked gallery item (i from 0) is
relevant to query q, i.e. has q's label; ``n_relevant[q]`` is R_q, the number of relevant
items in the whole gallery. A query with R_q = 0 scores 0 on every retrieval metric.
Ranking and its tie order are ``harness.search.rank``'s job, not these functions'.
"""

from __future__ import annotations

import numpy as np


def correct(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """[predicted_n = labels_n]; accuracy is its mean."""
    return (labels == predicted).astype(np.float64)


def top_k_hit(labels: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """[labels_n ∈ the k highest-scoring classes of row n]; top-k accuracy is its mean.

    Equal scores are ranked by ascending class index (a stable sort of -scores).
    """
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1).astype(np.float64)


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """(1/|C|) Σ_c 2·TP_c / (2·TP_c + FP_c + FN_c), over classes C in labels ∪ predicted."""
    classes = np.union1d(labels, predicted)
    tp = np.array([np.sum((labels == c) & (predicted == c)) for c in classes])
    fp = np.array([np.sum((labels != c) & (predicted == c)) for c in classes])
    fn = np.array([np.sum((labels == c) & (predicted != c)) for c in classes])
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))


def recall_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """[any of the top k is relevant]; Recall@k (metric-learning usage, a hit rate) is its
    mean over queries."""
    return relevance[:, :k].any(axis=1).astype(np.float64)


def mmp_at_k(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Modified precision (Σ_{i≤k} rel_qi) / min(k, R_q); mMP@k is its mean."""
    hits = relevance[:, :k].sum(axis=1)
    return _ratio(hits, np.minimum(k, n_relevant))


def map_at_r(relevance: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP@R = (1/R_q) Σ_{i≤R_q} P@i · rel_qi (Musgrave et al. 2020); MAP@R is its mean.

    P@i is the precision of the top i. Needs the ranking to reach max R_q.
    """
    if relevance.shape[1] < n_relevant.max(initial=0):
        raise ValueError("MAP@R needs rankings as long as the largest number of relevant items")
    ranks = np.arange(1, relevance.shape[1] + 1)
    within = ranks[None, :] <= n_relevant[:, None]
    precision = np.cumsum(relevance, axis=1) / ranks
    total = (precision * relevance * within).sum(axis=1)
    return _ratio(total, n_relevant)


def mrr_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """1 / (rank of the first relevant item in the top k), 0 when there is none; MRR@k is
    its mean."""
    top = relevance[:, :k]
    first = top.argmax(axis=1) + 1
    return np.where(top.any(axis=1), 1.0 / first, 0.0)


def ndcg_at_k(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """DCG_q / IDCG_q with DCG = Σ_{i≤k} rel_qi / log2(i + 1) and
    IDCG = Σ_{i ≤ min(k, R_q)} 1 / log2(i + 1) (binary gains); NDCG@k is its mean."""
    top = relevance[:, :k]
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = (top * discount).sum(axis=1)
    ideal_discount = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = np.concatenate([[0.0], np.cumsum(ideal_discount)])[np.minimum(k, n_relevant)]
    return _ratio(dcg, idcg)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where den is 0."""
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)
