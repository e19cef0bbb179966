"""Approximate indexes (faiss, Milvus through milvus-lite) against exact search: exact where
they must be, cosine scores, a loss gate, and index cells declared in a suite file."""

import json
from pathlib import Path

import faiss  # noqa: F401  (loaded once: pytester's in-process runs drop extension modules)
import numpy as np
import pytest
import timm  # noqa: F401
import torch  # noqa: F401

from harness.errors import SuiteError
from harness.index import IndexSetting, Searcher, neighbour_recall, settings, variants
from harness.search import numpy_rank
from harness.strategies import Features
from harness.strategies.knn import retrieval
from harness.suite import load_suite

pytest_plugins = ["pytester"]


def unnormalised(seed: int, n: int, dim: int = 16) -> np.ndarray:
    """Vectors whose norms vary 100-fold, so that L2 nearest neighbours are not cosine ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x * rng.uniform(0.1, 10, size=(n, 1)).astype(np.float32)


EXACT_SETTINGS = [
    IndexSetting("faiss", "Flat"),
    IndexSetting("faiss", "HNSW32", {"efSearch": 400}),
    IndexSetting("faiss", "IVF4,Flat", {"nprobe": 4}),
    IndexSetting("milvus", "FLAT"),
    IndexSetting("milvus", "HNSW", {"ef": 400}, {"build": {"M": 16, "efConstruction": 400}}),
]


@pytest.mark.parametrize("setting", EXACT_SETTINGS, ids=lambda s: s.label)
def test_an_index_that_must_be_exact_ranks_as_exact_cosine_search(setting):
    """On a 300-item gallery, with the search as wide as the gallery (or every list
    probed), the index returns exact search's neighbours and their cosine similarities:
    an index on L2 distance would return other scores (and, unnormalised, other items)."""
    if setting.engine == "milvus":
        pytest.importorskip("pymilvus", reason="pip install 'shelfbench[milvus]'")
    gallery, queries = unnormalised(0, 300), unnormalised(1, 40)
    exact_scores, exact = numpy_rank(queries, gallery, 20)
    l2_nearest = np.argmin(((queries[:, None] - gallery[None]) ** 2).sum(-1), axis=1)
    assert (l2_nearest != exact[:, 0]).any()  # the data tells the two metrics apart
    scores, found = Searcher(setting)(queries, gallery, 20)
    np.testing.assert_array_equal(found, exact)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_the_searcher_records_what_the_index_costs():
    searcher = Searcher(IndexSetting("faiss", "HNSW32", {"efSearch": 16}))
    searcher(unnormalised(1, 30), unnormalised(0, 500), 10)
    cost = searcher.cost
    assert cost["memory_bytes"] > 500 * 16 * 4  # the vectors and the graph
    assert 0 < cost["query_ms_p50"] <= cost["query_ms_p99"]
    assert cost["qps"] > 0 and cost["build_seconds"] > 0


def test_neighbour_recall_is_the_overlap_of_top_k_lists():
    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    found = np.array([[1, 0, 9, 9], [4, -1, -1, -1]])
    assert neighbour_recall(found, exact, 2) == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert neighbour_recall(found, exact, 4) == pytest.approx((2 / 4 + 1 / 4) / 2)


def test_a_neighbour_the_index_did_not_find_is_never_relevant():
    """faiss returns -1 where an IVF probe held fewer than k items; as an index into the
    gallery it would read the last item's label."""
    train = np.eye(4, dtype=np.float32)
    data = Features(train, np.array([0, 0, 1, 1]), train[:1], np.array([1]), 2)

    def finds_one(queries, gallery, k):
        return np.array([[1.0] + [-3e38] * (k - 1)]), np.array([[0] + [-1] * (k - 1)])

    ranking = retrieval(data, data.train, data.test, 4, finds_one)
    assert ranking.items["recall@5"].tolist() == [0.0]  # -1 would read label 1: a hit
    assert ranking.neighbour_labels.tolist() == [[0, -1, -1, -1]]


def test_lists_in_index_or_search_give_one_setting_each():
    params = {"index": ["exact", "faiss:HNSW32"], "search": {"efSearch": [16, 64]}}
    got = settings(params)
    assert got[0] is None
    assert [s.label for s in got[1:]] == ["faiss:HNSW32,efSearch=16", "faiss:HNSW32,efSearch=64"]


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("annoy:Tree", "unknown index engine 'annoy'; registered: faiss, milvus"),
        ("HNSW32", "must name an engine and an index"),
        (["exact", 3], r'index = \["exact", 3\]: must be a string or a non-empty list of strings'),
    ],
)
def test_a_wrong_index_is_one_line_at_collection(tmp_path, index, message):
    (tmp_path / "s.toml").write_text(
        '[[cells]]\ndatasets = ["synthetic-products"]\nbackbones = ["test-vit"]\n'
        f'strategies = ["knn"]\n[cells.strategy.knn]\nindex = {json.dumps(index)}\n'
    )
    with pytest.raises(SuiteError, match=message) as caught:
        load_suite(tmp_path / "s.toml")
    assert "\n" not in str(caught.value) and "s.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (IndexSetting("faiss", "HNSW32x"), "faiss cannot build it"),
        (IndexSetting("faiss", "IVF64,Flat"), "training on the 50-item gallery failed"),
        (IndexSetting("faiss", "IVF4,Flat", {"efSearch": 8}), "no search parameter 'efSearch'"),
        (IndexSetting("milvus", "IVF_PQ"), "milvus-lite builds only FLAT, AUTOINDEX, HNSW"),
        (
            IndexSetting("milvus", "HNSW", {}, {}, {"uri": "/no/such/dir/x.db"}),
            "at /no/such/dir/x.db: .*/no/such/dir not exists",
        ),
    ],
)
def test_an_index_the_engine_cannot_build_or_search_is_one_line(setting, message):
    if setting.engine == "milvus":
        pytest.importorskip("pymilvus", reason="pip install 'shelfbench[milvus]'")
    with pytest.raises(SuiteError, match=message) as caught:
        Searcher(setting)(unnormalised(1, 5), unnormalised(0, 50), 5)
    assert "\n" not in str(caught.value)


SUITE = """
[profile]
image_size = 48
batch_size = 64

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet"]
strategies = ["knn"]

[cells.strategy.knn]
index = "faiss:HNSW32"
search = { efSearch = [8, 512] }
max_index_loss = 0.01

[[cells]]
datasets = ["synthetic-products"]
backbones = ["test-efficientnet"]
strategies = ["knn"]

[cells.strategy.knn]
index = "faiss:IVF2,PQ1x2"
max_index_loss = 0.01
"""
WIDE = "synthetic-products/test-efficientnet/knn@faiss:HNSW32,efSearch=512"
COARSE = "synthetic-products/test-efficientnet/knn@faiss:IVF2,PQ1x2"


def test_index_cells_report_their_loss_and_a_coarse_index_fails_its_floor(pytester, write_suite):
    """A 2-byte-per-vector IVF-PQ index loses far more than max_index_loss of mMP@5 and
    fails; HNSW searched as wide as the gallery loses nothing and passes. The rows carry
    the index's fields, and the reports its table and its recall-QPS plot."""
    write_suite(SUITE)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [f"*{COARSE}*the index loses more than max_index_loss*mmp@5: * (exact) → *worse*"]
    )
    rows = {r["id"]: r for r in json.loads(Path("reports/latest.json").read_text())["cells"]}
    wide, coarse = rows[WIDE]["index"], rows[COARSE]["index"]
    assert wide["neighbour_recall"]["10"] == 1.0 and wide["loss"]["mmp@5"]["value"] == 0.0
    assert rows[WIDE]["metrics"] == wide["exact_metrics"]
    assert coarse["loss"]["mmp@5"]["low"] > 0.01 and coarse["neighbour_recall"]["10"] < 0.5
    assert set(coarse["loss"]) == set(coarse["exact_metrics"])  # every metric's loss
    assert coarse["exact_metrics"] == wide["exact_metrics"]  # the same exact search
    for field in ("engine", "spec", "search", "build_seconds", "memory_bytes", "qps"):
        assert field in coarse
    markdown = Path("reports/latest.md").read_text()
    assert "Retrieval through approximate indexes" in markdown
    assert "faiss:HNSW32,efSearch=8" in markdown
    html = Path("reports/latest.html").read_text()
    assert "recall against speed" not in html  # the plot is an image: its alt text is ""
    assert html.count("<img") >= 2 and "faiss:IVF2,PQ1x2" in html


def test_a_swept_build_parameter_names_its_cells_and_options_are_the_engines():
    params = {"index": "milvus:HNSW", "build": {"M": [16, 32], "efConstruction": 200}}
    params["search"] = {"ef": 64}
    got = [label for label, _ in variants(params)]
    assert got == ["milvus:HNSW,M=16,ef=64", "milvus:HNSW,M=32,ef=64"]
    with pytest.raises(SuiteError, match=r"unknown key 'options\.host'; it takes uri"):
        settings({"index": "milvus:HNSW", "options": {"host": "x"}})
    with pytest.raises(
        SuiteError, match=r"unknown key 'options\.uri'; it takes none \(None: faiss"
    ):
        settings({"index": "faiss:HNSW32", "options": {"uri": "x"}})
