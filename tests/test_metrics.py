"""Each metric against a brute-force, loop-per-query reference, on random rankings."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import metrics


@st.composite
def rankings(draw):
    """Random query labels, a random gallery, and each query's full ranking of it."""
    n_classes = draw(st.integers(1, 5))
    n_gallery = draw(st.integers(1, 30))
    n_queries = draw(st.integers(1, 10))
    gallery = draw(hnp.arrays(np.int64, n_gallery, elements=st.integers(0, n_classes - 1)))
    queries = draw(hnp.arrays(np.int64, n_queries, elements=st.integers(0, n_classes - 1)))
    order = np.stack([draw(st.permutations(range(n_gallery))) for _ in range(n_queries)])
    relevance = gallery[order] == queries[:, None]
    n_relevant = np.array([(gallery == q).sum() for q in queries])
    return relevance, n_relevant


def reference(relevance, n_relevant, score_one):
    return float(
        np.mean([score_one(list(r), int(n)) for r, n in zip(relevance, n_relevant, strict=True)])
    )


def recall_one(rel, n, k):
    return 1.0 if any(rel[:k]) else 0.0


def mmp_one(rel, n, k):
    return sum(rel[:k]) / min(k, n) if n else 0.0


def map_r_one(rel, n):
    if not n:
        return 0.0
    return sum(sum(rel[:i]) / i * rel[i - 1] for i in range(1, n + 1)) / n


def mrr_one(rel, n, k):
    for i, r in enumerate(rel[:k], start=1):
        if r:
            return 1 / i
    return 0.0


def ndcg_one(rel, n, k):
    dcg = sum(r / math.log2(i + 1) for i, r in enumerate(rel[:k], start=1))
    idcg = sum(1 / math.log2(i + 1) for i in range(1, min(k, n) + 1))
    return dcg / idcg if idcg else 0.0


@given(rankings(), st.integers(1, 12))
def test_retrieval_metrics_match_brute_force(ranking, k):
    rel, n_rel = ranking
    assert metrics.recall_at_k(rel, k).mean() == pytest.approx(
        reference(rel, n_rel, lambda r, n: recall_one(r, n, k))
    )
    assert metrics.mmp_at_k(rel, n_rel, k).mean() == pytest.approx(
        reference(rel, n_rel, lambda r, n: mmp_one(r, n, k))
    )
    assert metrics.mrr_at_k(rel, k).mean() == pytest.approx(
        reference(rel, n_rel, lambda r, n: mrr_one(r, n, k))
    )
    assert metrics.ndcg_at_k(rel, n_rel, k).mean() == pytest.approx(
        reference(rel, n_rel, lambda r, n: ndcg_one(r, n, k))
    )
    assert metrics.map_at_r(rel, n_rel).mean() == pytest.approx(reference(rel, n_rel, map_r_one))


@given(rankings())
def test_retrieval_metrics_are_fractions(ranking):
    rel, n_rel = ranking
    for value in (
        metrics.mmp_at_k(rel, n_rel, 5).mean(),
        metrics.map_at_r(rel, n_rel).mean(),
        metrics.ndcg_at_k(rel, n_rel, 5).mean(),
    ):
        assert 0.0 <= value <= 1.0 + 1e-12


def test_map_at_r_refuses_a_ranking_shorter_than_r():
    with pytest.raises(ValueError, match="MAP@R"):
        metrics.map_at_r(np.ones((1, 2), dtype=bool), np.array([3]))


def test_perfect_ranking_scores_one():
    rel = np.array([[True, True, False, False]])
    n = np.array([2])
    assert (
        metrics.map_at_r(rel, n).mean()
        == metrics.ndcg_at_k(rel, n, 4).mean()
        == metrics.mmp_at_k(rel, n, 5).mean()
        == 1.0
    )


labels_pairs = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.int64, n, elements=st.integers(0, 6)),
        hnp.arrays(np.int64, n, elements=st.integers(0, 6)),
    )
)


@given(labels_pairs)
def test_classification_metrics_match_brute_force(pair):
    y, p = pair
    assert metrics.correct(y, p).mean() == pytest.approx(
        sum(a == b for a, b in zip(y, p, strict=True)) / len(y)
    )
    f1s = []
    for c in set(y) | set(p):
        tp = sum(a == c and b == c for a, b in zip(y, p, strict=True))
        fp = sum(a != c and b == c for a, b in zip(y, p, strict=True))
        fn = sum(a == c and b != c for a, b in zip(y, p, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    tp, actual, guessed = metrics.class_counts(np.array(y), np.array(p), max(y + p) + 1)
    assert metrics.macro_f1_from_counts(tp, actual, guessed)[0] == pytest.approx(
        sum(f1s) / len(f1s)
    )


@given(
    st.integers(1, 20).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, 5)),
            hnp.arrays(np.float64, (n, 6), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        )
    ),
    st.integers(1, 6),
)
def test_top_k_accuracy_breaks_ties_by_class_index(data, k):
    y, scores = data
    hits = 0
    for label, row in zip(y, scores, strict=True):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in ranked[:k]
    rank = metrics.label_rank(y, scores, chunk=3)
    assert metrics.top_k_hit(rank, k).mean() == pytest.approx(hits / len(y))


def test_a_registered_metric_reaches_strategies_floors_bootstrap_and_reports(tmp_path):
    """Balanced accuracy was added through the registry alone."""
    from harness.cell import run_cell
    from harness.document import build, markdown
    from harness.report import to_csv
    from harness.strategies import STRATEGIES
    from harness.suite import load_suite

    entry = metrics.METRICS.get("balanced_accuracy")
    assert entry.family == "classification" and entry.from_counts is not None
    assert all("balanced_accuracy" in s.metrics for s in STRATEGIES if "accuracy" in s.metrics)
    suite = tmp_path / "s.toml"
    suite.write_text(
        '[profile]\nimage_size = 32\n[[cells]]\ndatasets = ["synthetic-products"]\n'
        'backbones = ["test-vit"]\nstrategies = ["knn"]\n'
        '[floors."synthetic-products/test-vit/knn"]\nbalanced_accuracy = { floor = 0.99, '
        'measured = 0.99, date = "2026-11-28", machine = "a test" }\n'
    )
    (cell,) = load_suite(suite).cells
    result = run_cell(cell, tmp_path / "cache")
    low, high = result.ci["balanced_accuracy"]
    assert low <= result.metrics["balanced_accuracy"] <= high
    assert result.below_floor(cell)[0].startswith("balanced_accuracy = ")
    row = result
    assert "balanced_accuracy" in to_csv([row]).splitlines()[0]
    assert "balanced_accuracy" in markdown(build({}, [row]))


@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, n, elements=st.integers(0, 6)),
            hnp.arrays(np.int64, (n, 5), elements=st.integers(0, 6)),
            hnp.arrays(np.float64, (n, 5), elements=st.sampled_from([0.5, 1.0, 1.5, 2.0])),
        )
    )
)
def test_the_sparse_vote_equals_the_dense_one_ties_included(data):
    """kNN's vote without a queries × classes array gives the dense vote's prediction; a
    label's rank counts the voted classes strictly ahead of it, and an unvoted label is
    never a hit. Weights drawn from a few values make ties common."""
    labels, voters, weights = data
    dense = np.zeros((len(labels), 7))
    np.add.at(dense, (np.arange(len(labels))[:, None], voters), weights)
    predicted, rank = metrics.vote_ranks(labels, voters, weights)
    np.testing.assert_array_equal(predicted, dense.argmax(1))
    voted = (voters == labels[:, None]).any(axis=1)
    own = dense[np.arange(len(labels)), labels][:, None]
    expected = np.where(voted, (dense > own).sum(axis=1), metrics.NO_VOTE)
    np.testing.assert_array_equal(rank, expected)


@given(st.permutations(range(60)), st.integers(0, 2**32 - 1))
def test_knn_top5_counts_an_unvoted_class_as_a_miss_whatever_the_numbering(order, seed):
    """Against scikit-learn's top_k_accuracy_score on the dense vote, with 60 classes of
    which each query votes for at most 3 (most labels get no vote): the hits are
    scikit-learn's among voted labels, unvoted labels are misses, and renumbering the
    classes changes nothing."""
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(seed)
    n, c, k = 80, 60, 3
    labels = rng.integers(0, c, n)
    voters = np.where(rng.random((n, k)) < 0.5, labels[:, None], rng.integers(0, c, (n, k)))
    weights = rng.uniform(1, 2, (n, k))  # continuous: no two voted classes tie
    dense = np.zeros((n, c))
    np.add.at(dense, (np.arange(n)[:, None], voters), weights)
    _, rank = metrics.vote_ranks(labels, voters, weights)
    voted = (voters == labels[:, None]).any(axis=1)
    sklearn = np.array(
        [
            top_k_accuracy_score([y], [row], k=5, labels=np.arange(c))
            for y, row in zip(labels, dense, strict=True)
        ]
    )
    np.testing.assert_array_equal(metrics.top_k_hit(rank, 5), sklearn * voted)
    renumber = np.asarray(order)
    _, renumbered = metrics.vote_ranks(renumber[labels], renumber[voters], weights)
    np.testing.assert_array_equal(renumbered, rank)


def test_a_label_nobody_voted_for_is_no_top5_hit():
    """Two neighbours vote for classes 3 and 4 of ten; the label 9 (or 0) got no vote.
    scikit-learn's top-5 over the dense scores fills its list with unvoted classes by
    index and counts label 9 a hit (the old rule counted label 0 one): both are misses."""
    from sklearn.metrics import top_k_accuracy_score

    voters, weights = np.array([[3, 4], [3, 4]]), np.array([[2.0, 1.0], [2.0, 1.0]])
    labels = np.array([9, 0])
    dense = np.zeros((2, 10))
    np.add.at(dense, (np.arange(2)[:, None], voters), weights)
    assert top_k_accuracy_score([9], dense[:1], k=5, labels=np.arange(10)) == 1.0
    _, rank = metrics.vote_ranks(labels, voters, weights)
    assert metrics.top_k_hit(rank, 5).tolist() == [0.0, 0.0]
