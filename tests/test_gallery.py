"""The report's pictures of retrieval: which queries it shows, that their neighbours are
the dataset's items the ranking returned, and that the HTML embeds them."""

import numpy as np

from harness.datasets import open_dataset
from harness.gallery import changed, sample_and_worst
from harness.report_html import html
from harness.suite import load_suite


def items(first_hit):
    n = len(first_hit)
    return {
        "query": np.arange(100, 100 + n),
        "first_hit": np.asarray(first_hit),
        "top5": np.arange(5 * n).reshape(n, 5),
        "top5_relevant": np.zeros((n, 5), dtype=bool),
    }


def test_the_worst_queries_are_those_whose_first_hit_ranks_lowest():
    shown = sample_and_worst(items([0, 3, -1, 0, 7, 1, 0, 0, 2, 0, 0, 0, 0, 0]), n=2)
    assert len(shown.sample.queries) == 2
    rest = set(range(100, 114)) - set(shown.sample.queries)
    ranks = {
        q: r if r >= 0 else 99
        for q, r in zip(range(100, 114), [0, 3, -1, 0, 7, 1, 0, 0, 2, 0, 0, 0, 0, 0], strict=True)
    }
    expected = sorted(rest, key=lambda q: -ranks[q])[:2]
    assert shown.worst.queries == expected


def test_what_changed_pairs_the_same_queries_by_how_far_their_first_hit_moved():
    old, new = items([0, 0, 5, 2, -1]), items([0, 9, 5, 0, 0])
    moved = changed(old, new, "the baseline", n=3)
    assert moved is not None and moved.against == "the baseline"
    assert moved.old.queries == moved.new.queries == [104, 101, 103]
    assert moved.old.first_hit == [-1, 0, 2] and moved.new.first_hit == [0, 9, 0]
    assert changed(old, old, "itself") is None  # nothing moved, nothing shown


SUITE = """
[profile]
image_size = 48
batch_size = 64

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet"]
strategies = ["knn"]
"""


def test_a_retrieval_cell_shows_dataset_items_and_the_html_embeds_them(tmp_path):
    from harness.cell import run_cell

    (tmp_path / "s.toml").write_text(SUITE)
    (cell,) = load_suite(tmp_path / "s.toml").cells
    result = run_cell(cell, tmp_path / "cache")
    dataset = open_dataset(cell.dataset)
    train, test = dataset.split("train"), dataset.split("test")
    query = np.asarray(result.items["query"])
    top5 = np.asarray(result.items["top5"])
    relevant = train.labels[top5] == test.labels[query][:, None]
    np.testing.assert_array_equal(relevant, result.items["top5_relevant"])
    shown = result.gallery.sample
    assert set(shown.queries) <= set(query.tolist()) and len(shown.top5[0]) == 5
    page = html({"started": "now"}, [result])
    assert f"What <code>{cell.id}</code> retrieves" in page
    assert page.count('class="thumb"') == 2 * 6 * 6  # sample and worst: a query and five
