"""All metrics, as pure numpy functions over labels, scores and ranked relevance, and the
registry ``METRICS`` that says what each one is: the one place floors, the gate, the
bootstrap, the strategies and the reports read metric names from.

Most metrics are means of a per-item value; those functions return the per-item array
(one value per test item or query), so that confidence intervals can resample items.
The metric itself is its mean. Macro-F1 and balanced accuracy are not means of items:
they are computed from per-class counts (``class_counts``).

Retrieval inputs: ``relevance[q, i]`` is True when the i-th ranked gallery item (i from 0) is
relevant to query q, i.e. has q's label; ``n_relevant[q]`` is R_q, the number of relevant
items in the whole gallery. A query with R_q = 0 scores 0 on every retrieval metric.
Ranking and its tie order are ``harness.search.rank``'s job, not these functions'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from harness.registry import Registry


def correct(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """[predicted_n = labels_n]; accuracy is its mean."""
    return (labels == predicted).astype(np.float64)


def label_rank(labels: np.ndarray, scores: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Where each item's label stands in its row's ranking of classes by score (0: first).
    Equal scores rank by ascending class index, as a stable sort of -scores would; rows
    are done ``chunk`` at a time, so memory stays O(chunk × classes)."""
    out = np.empty(len(labels), dtype=np.int64)
    classes = np.arange(scores.shape[1])
    for start in range(0, len(labels), chunk):
        rows, y = scores[start : start + chunk], labels[start : start + chunk]
        own = np.take_along_axis(rows, y[:, None], 1)
        ahead = (rows > own) | ((rows == own) & (classes < y[:, None]))
        out[start : start + chunk] = ahead.sum(axis=1)
    return out


def top_k_hit(rank: np.ndarray, k: int) -> np.ndarray:
    """[the label is among the k highest-scoring classes], from ``label_rank``; top-k
    accuracy is its mean."""
    return (rank < k).astype(np.float64)


# The label rank of a class that got no vote: after every k, so never a top-k hit.
NO_VOTE = np.iinfo(np.int64).max


def vote_ranks(
    labels: np.ndarray, voters: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A weighted vote's prediction and each label's rank, without a queries × classes
    array: row n gives ``weights[n, i]`` to class ``voters[n, i]``. Each class's score is
    summed in vote order, as ``np.add.at`` into a dense array would, so the prediction
    equals the dense vote's argmax exactly (ties to the lower class index).

    The rank is the number of voted classes with a strictly higher score: a label tied
    with others counts as ahead of them, whatever their numbers. A label that got no vote
    ranks ``NO_VOTE``: a vote says nothing about it, so it is never a top-k hit (ranking
    it among the unvoted classes by index made top-5 accuracy depend on how classes are
    numbered)."""
    n, k = voters.shape
    score = np.zeros((n, k))
    for i in range(k):  # the dense accumulation's order: vote 0, 1, ...
        score += (voters == voters[:, i : i + 1]) * weights[:, i : i + 1]
    first = np.ones((n, k), dtype=bool)
    for i in range(1, k):
        first[:, i] = ~(voters[:, :i] == voters[:, i : i + 1]).any(axis=1)
    best = np.where(first, score, -np.inf).max(axis=1, keepdims=True)
    predicted = np.where(first & (score == best), voters, NO_VOTE).min(axis=1)
    is_own = voters == labels[:, None]
    voted = is_own.any(axis=1)
    own = np.where(is_own, score, -np.inf).max(axis=1, keepdims=True)
    ahead = (first & (score > own)).sum(axis=1)
    return predicted.astype(np.int64), np.where(voted, ahead, NO_VOTE)


def recall_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """[any of the top k is relevant]; Recall@k (metric-learning usage, a hit rate) is its
    mean over queries."""
    return np.asarray(relevance[:, :k].any(axis=1), dtype=np.float64)


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


# Aggregates over per-class counts: true positives, items of the class, predictions of it.
def macro_f1_from_counts(tp: np.ndarray, actual: np.ndarray, guessed: np.ndarray) -> np.ndarray:
    """Macro-F1 per row of counts (B x C): 2·TP_c / (actual_c + guessed_c), averaged over the
    classes present in labels or predictions."""
    present = (actual + guessed) > 0
    f1 = np.divide(2 * tp, actual + guessed, out=np.zeros(tp.shape), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def balanced_accuracy_from_counts(
    tp: np.ndarray, actual: np.ndarray, guessed: np.ndarray
) -> np.ndarray:
    """Balanced accuracy per row of counts: the mean over classes present in the labels of
    their recall TP_c / actual_c (scikit-learn's ``balanced_accuracy_score``)."""
    present = actual > 0
    recall = np.divide(tp, actual, out=np.zeros(tp.shape), where=present)
    return recall.sum(axis=-1) / present.sum(axis=-1)


def class_counts(
    labels: np.ndarray, predicted: np.ndarray, n_classes: int, idx: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (TP, actual, guessed) over the items, or over each row of resampled item
    indices ``idx`` (B x N), one row at a time: memory O(items + classes), never O(C²)."""
    hit = labels == predicted
    if idx is None:
        idx = np.arange(len(labels))[None, :]
    out = np.empty((3, len(idx), n_classes))
    for b, rows in enumerate(idx):
        y, p = labels[rows], predicted[rows]
        out[0, b] = np.bincount(y, weights=hit[rows], minlength=n_classes)
        out[1, b] = np.bincount(y, minlength=n_classes)
        out[2, b] = np.bincount(p, minlength=n_classes)
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Metric:
    """A registry entry: what a metric is, which strategies report it, how it is shown.

    ``family``: strategies report every metric of the families they declare
    (``classification``: from labels and class scores; ``retrieval``: from ranked
    relevance). Exactly one of ``per_item`` (a mean of per-item values, from
    ``(labels, predicted, label_rank)`` or ``(relevance, n_relevant)``) and ``from_counts``
    (an aggregate of per-class counts, from labels and predictions) is set. ``headline``:
    shown in the terminal table and the interval tables. ``low``..``high``: the values it
    can take, where a suite's floors must lie. ``depth``: the ranks it reads, so that
    retrieval ranks deep enough for every registered metric (MAP@R reads to each query's
    R, which retrieval always reaches). Registration order is display order.
    """

    name: str
    family: str
    per_item: Callable[..., np.ndarray] | None = None
    from_counts: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    higher_is_better: bool = True
    headline: bool = False
    description: str = ""
    low: float = 0.0  # the range a value (and a floor) lies in
    high: float = 1.0
    depth: int = 0  # how deep a ranking it reads (recall@100: 100); 0: no ranking

    def __post_init__(self) -> None:
        if (self.per_item is None) == (self.from_counts is None):
            raise ValueError(f"metric {self.name}: give exactly one of per_item, from_counts")

    def gain(self, old: float, new: float) -> float:
        """How much better ``new`` is than ``old`` (negative: worse), in either direction."""
        return new - old if self.higher_is_better else old - new


FAMILIES = ("classification", "retrieval")
METRICS: Registry[Metric] = Registry("metric", ValueError)


def register(metric: Metric) -> Metric:
    if metric.family not in FAMILIES:
        raise ValueError(f"metric {metric.name}: family is one of {FAMILIES}")
    return METRICS.add(metric)


def deepest() -> int:
    """The deepest ranking any registered metric reads."""
    return max((m.depth for m in METRICS.in_order()), default=0)


def in_families(families: Iterable[str]) -> tuple[str, ...]:
    """Names of the metrics of ``families``, in display order."""
    wanted = set(families)
    return tuple(m.name for m in METRICS.in_order() if m.family in wanted)


for _metric in (
    Metric("accuracy", "classification", per_item=lambda y, p, r: correct(y, p),
           headline=True, description="share of test items whose top class is right"),
    Metric("top5_accuracy", "classification", per_item=lambda y, p, r: top_k_hit(r, 5),
           description="share whose label is among the 5 top-scoring classes"),
    Metric("macro_f1", "classification", from_counts=macro_f1_from_counts, headline=True,
           description="mean per-class F1"),
    Metric("balanced_accuracy", "classification", from_counts=balanced_accuracy_from_counts,
           description="mean per-class recall (CLIP_benchmark's; for imbalanced catalogues)"),
    Metric("recall@1", "retrieval", per_item=lambda r, n: recall_at_k(r, 1), headline=True,
           description="share of queries with a relevant item first", depth=1),
    Metric("recall@5", "retrieval", per_item=lambda r, n: recall_at_k(r, 5),
           description="share of queries with a relevant item in the top 5", depth=5),
    Metric("mmp@5", "retrieval", per_item=lambda r, n: mmp_at_k(r, n, 5), headline=True,
           description="mean modified precision at 5 (the study's main metric)", depth=5),
    Metric("map@r", "retrieval", per_item=map_at_r, headline=True,
           description="mean average precision at R (Musgrave et al.)"),
    Metric("mrr@10", "retrieval", per_item=lambda r, n: mrr_at_k(r, 10),
           description="mean reciprocal rank of the first relevant item, cut at 10", depth=10),
    Metric("ndcg@10", "retrieval", per_item=lambda r, n: ndcg_at_k(r, n, 10),
           description="normalised discounted cumulative gain at 10, binary gains", depth=10),
):  # fmt: skip
    register(_metric)
METRICS.freeze()
