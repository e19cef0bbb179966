"""Per-item results → metrics, bootstrap confidence intervals, and paired comparisons.

A cell keeps, per test item (query), what each metric averages: the per-item metrics of
``harness.metrics.METRICS`` (accuracy, the retrieval metrics, ...) are means of per-item
values; the per-class ones (macro-F1, balanced accuracy) are recomputed from ``labels``
and ``predicted``. Resampling items with replacement therefore gives every metric's
sampling distribution, and resampling the same items in two runs of one cell gives the
distribution of their difference (a paired bootstrap).
"""

from __future__ import annotations

import numpy as np

from harness.metrics import METRICS, Metric, class_counts, label_rank

Items = dict[str, np.ndarray]
KEYS = ("labels", "predicted")
# Resamples drawn at a time: memory O(batch × items), whatever the number of resamples.
RESAMPLE_BATCH = 64


def classification_items(labels: np.ndarray, scores: np.ndarray) -> Items:
    """Per test item: label, prediction (argmax score, ties to the lower class), and every
    per-item classification metric of the registry."""
    return ranked_items(labels, np.argmax(scores, axis=1), label_rank(labels, scores))


def ranked_items(labels: np.ndarray, predicted: np.ndarray, rank: np.ndarray) -> Items:
    """``classification_items`` from each item's prediction and ``label_rank``."""
    per_item = {
        m.name: m.per_item(labels, predicted, rank)
        for m in METRICS.in_order()
        if m.family == "classification" and m.per_item is not None
    }
    return {"labels": labels, "predicted": predicted, **per_item}


def retrieval_items(relevance: np.ndarray, n_relevant: np.ndarray) -> Items:
    """Per query: every retrieval metric of the registry, from ranked relevance and R_q."""
    return {
        m.name: m.per_item(relevance, n_relevant)
        for m in METRICS.in_order()
        if m.family == "retrieval" and m.per_item is not None
    }


def metric_names(items: Items) -> list[str]:
    """The registered metrics the items support, in display order."""
    counted = all(k in items for k in KEYS)
    return [
        m.name
        for m in METRICS.in_order()
        if m.name in items or (counted and m.from_counts is not None)
    ]


def _counted(items: Items, metric: Metric, idx: np.ndarray | None) -> np.ndarray:
    labels, predicted = items["labels"], items["predicted"]
    n_classes = int(max(labels.max(initial=0), predicted.max(initial=0))) + 1
    assert metric.from_counts is not None
    return metric.from_counts(*class_counts(labels, predicted, n_classes, idx))


def value(items: Items, metric: str) -> float:
    """``metric`` on all items."""
    entry = METRICS.get(metric)
    if entry.from_counts is not None:
        return float(_counted(items, entry, None)[0])
    return float(np.mean(items[metric]))


def _resampled(items: Items, metric: str, idx: np.ndarray) -> np.ndarray:
    entry = METRICS.get(metric)
    if entry.from_counts is not None:
        return _counted(items, entry, idx)
    return items[metric][idx].mean(axis=1)


def summarise(items: Items) -> dict[str, float]:
    """Every metric the items support, on all items."""
    return {name: value(items, name) for name in metric_names(items)}


def n_items(items: Items, metric: str) -> int:
    """How many items ``metric`` has (retrieval leaves out queries with nothing relevant)."""
    return len(items["labels" if METRICS.get(metric).from_counts else metric])


def draws(items: list[Items], metric: str, n: int, seed: int, size: int) -> list[np.ndarray]:
    """``metric`` on ``n`` seeded bootstrap resamples of ``size`` item indices, the same
    resamples for each of ``items`` (so differences are paired), drawn in batches."""
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in items]
    for start in range(0, n, RESAMPLE_BATCH):
        idx = rng.integers(0, size, size=(min(RESAMPLE_BATCH, n - start), size))
        for got, run in zip(out, items, strict=True):
            got.append(_resampled(run, metric, idx))
    return [np.concatenate(got) for got in out]


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(
    items: Items, metric: str, n: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over items."""
    (values,) = draws([items], metric, n, seed, n_items(items, metric))
    return _percentiles(values, level)


def paired_difference(
    old: Items, new: Items, metric: str, n: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """new − old on the same items, and its paired-bootstrap percentile interval."""
    size = n_items(new, metric)
    if n_items(old, metric) != size:
        raise ValueError("paired comparison needs the same test items in both runs")
    old_draws, new_draws = draws([old, new], metric, n, seed, size)
    low, high = _percentiles(new_draws - old_draws, level)
    return value(new, metric) - value(old, metric), low, high
