"""Bootstrap intervals and paired comparisons over per-item results."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import balanced_accuracy_score, f1_score

from harness import stats
from harness.report import pareto_front


def items_for(labels, scores):
    return stats.classification_items(labels, scores)


@given(
    st.integers(2, 60).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, 5)),
            hnp.arrays(np.float64, (n, 6), elements=st.floats(0, 1)),
        )
    )
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn on one-class samples
def test_summary_matches_the_metric_functions(data):
    labels, scores = data
    summary = stats.summarise(items_for(labels, scores))
    predicted = np.argmax(scores, axis=1)
    assert summary["accuracy"] == pytest.approx(np.mean(labels == predicted))
    assert summary["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    assert summary["top5_accuracy"] == pytest.approx((top5 == labels[:, None]).any(1).mean())


def test_interval_brackets_the_estimate_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        correct = {"accuracy": (rng.random(n) < 0.8).astype(float)}
        low, high = stats.bootstrap_ci(correct, "accuracy", 500, seed=0)
        assert low <= stats.value(correct, "accuracy") <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): a quarter, with bootstrap noise


def test_identical_runs_differ_by_exactly_zero():
    items = {"accuracy": np.array([1.0, 0.0, 1.0, 1.0])}
    assert stats.paired_difference(items, items, "accuracy", 200, 0) == (0.0, 0.0, 0.0)


def test_pairing_removes_the_shared_item_difficulty():
    """Two runs that agree on which items are hard: the paired interval of their
    difference is much narrower than either run's own interval."""
    rng = np.random.default_rng(1)
    hard = rng.random(1000) < 0.3
    old = {"accuracy": (~hard).astype(float)}
    new = {"accuracy": np.where(rng.random(1000) < 0.02, 0.0, old["accuracy"])}
    diff, low, high = stats.paired_difference(old, new, "accuracy", 500, 0)
    own_low, own_high = stats.bootstrap_ci(new, "accuracy", 500, 0)
    assert high < 0 and (high - low) < (own_high - own_low) / 2
    assert diff == pytest.approx(new["accuracy"].mean() - old["accuracy"].mean())


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (0.5, 0.2), (4.0, 0.9)]
    assert pareto_front(points) == [3, 0, 2]


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, 4)),
            hnp.arrays(np.int64, n, elements=st.integers(0, 4)),
            hnp.arrays(np.int64, (5, n), elements=st.integers(0, n - 1)),
        )
    )
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_per_class_metrics_match_scikit_learn_on_every_resample(data):
    labels, predicted, idx = data
    items = {"labels": labels, "predicted": predicted}
    f1 = [f1_score(labels[row], predicted[row], average="macro") for row in idx]
    balanced = [balanced_accuracy_score(labels[row], predicted[row]) for row in idx]
    np.testing.assert_allclose(stats._resampled(items, "macro_f1", idx), f1)
    np.testing.assert_allclose(stats._resampled(items, "balanced_accuracy", idx), balanced)
