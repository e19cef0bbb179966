"""Per-item results → metrics, bootstrap confidence intervals, and paired comparisons.

A cell keeps, per test item (query), what each metric averages: ``accuracy``,
``top5_accuracy`` and the retrieval metrics are means of per-item values; ``macro_f1`` is
recomputed from ``labels`` and ``predicted``. Resampling items with replacement therefore
gives every metric's sampling distribution, and resampling the same items in two runs of
one cell gives the distribution of their difference (a paired bootstrap).
"""

from __future__ import annotations

import numpy as np

from harness import metrics

Items = dict[str, np.ndarray]
KEYS = ("labels", "predicted")


def macro_f1_resampled(labels: np.ndarray, predicted: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``metrics.macro_f1`` on each row of item indices ``idx`` (B x N) at once, through one
    confusion matrix per row; classes absent from both sides of a row do not count."""
    n_classes = int(max(labels.max(initial=0), predicted.max(initial=0))) + 1
    rows = np.arange(len(idx))[:, None] * n_classes * n_classes
    flat = (rows + labels[idx] * n_classes + predicted[idx]).ravel()
    confusion = np.bincount(flat, minlength=len(idx) * n_classes**2).reshape(
        len(idx), n_classes, n_classes
    )
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    actual, guessed = confusion.sum(axis=2), confusion.sum(axis=1)
    present = (actual + guessed) > 0
    f1 = np.divide(2 * tp, actual + guessed, out=np.zeros(tp.shape), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def classification_items(labels: np.ndarray, scores: np.ndarray) -> Items:
    """Per test item: label, prediction (argmax score), correctness and top-5 hit."""
    predicted = np.argmax(scores, axis=1)
    return {
        "labels": labels,
        "predicted": predicted,
        "accuracy": metrics.correct(labels, predicted),
        "top5_accuracy": metrics.top_k_hit(labels, scores, 5),
    }


def metric_names(items: Items) -> list[str]:
    names = [name for name in items if name not in KEYS]
    return names + (["macro_f1"] if all(k in items for k in KEYS) else [])


def value(items: Items, metric: str) -> float:
    """``metric`` on all items."""
    if metric == "macro_f1":
        return metrics.macro_f1(items["labels"], items["predicted"])
    return float(np.mean(items[metric]))


def _resampled(items: Items, metric: str, idx: np.ndarray) -> np.ndarray:
    if metric == "macro_f1":
        return macro_f1_resampled(items["labels"], items["predicted"], idx)
    return items[metric][idx].mean(axis=1)


def summarise(items: Items) -> dict[str, float]:
    """Every metric the items support, on all items."""
    return {name: value(items, name) for name in metric_names(items)}


def n_items(items: Items, metric: str) -> int:
    """How many items ``metric`` has (retrieval leaves out queries with nothing relevant)."""
    return len(items["labels" if metric == "macro_f1" else metric])


def resamples(n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` bootstrap samples of item indices (rows), seeded."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(
    items: Items, metric: str, n: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over items."""
    idx = resamples(n_items(items, metric), n, seed)
    return _percentiles(_resampled(items, metric, idx), level)


def paired_difference(
    old: Items, new: Items, metric: str, n: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """new − old on the same items, and its paired-bootstrap percentile interval."""
    size = n_items(new, metric)
    if n_items(old, metric) != size:
        raise ValueError("paired comparison needs the same test items in both runs")
    idx = resamples(size, n, seed)
    draws = _resampled(new, metric, idx) - _resampled(old, metric, idx)
    low, high = _percentiles(draws, level)
    return value(new, metric) - value(old, metric), low, high
