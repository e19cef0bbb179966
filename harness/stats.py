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
RECOMPUTED = {
    "macro_f1": lambda items, idx: metrics.macro_f1(items["labels"][idx], items["predicted"][idx])
}
KEYS = ("labels", "predicted")


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
    return names + [name for name in RECOMPUTED if all(k in items for k in KEYS)]


def value(items: Items, metric: str, idx: np.ndarray | slice = slice(None)) -> float:
    if metric in RECOMPUTED:
        return RECOMPUTED[metric](items, idx)
    return float(np.mean(items[metric][idx]))


def summarise(items: Items) -> dict[str, float]:
    """Every metric the items support, on all items."""
    return {name: value(items, name) for name in metric_names(items)}


def resamples(n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` bootstrap samples of item indices (rows), seeded."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))


def bootstrap_ci(
    items: Items, metric: str, n: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over items."""
    size = len(next(iter(items.values())))
    draws = [value(items, metric, idx) for idx in resamples(size, n, seed)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(
    old: Items, new: Items, metric: str, n: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """new − old on the same items, and its paired-bootstrap percentile interval."""
    size = len(next(iter(new.values())))
    if len(next(iter(old.values()))) != size:
        raise ValueError("paired comparison needs the same test items in both runs")
    draws = [value(new, metric, idx) - value(old, metric, idx) for idx in resamples(size, n, seed)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return value(new, metric) - value(old, metric), float(low), float(high)
