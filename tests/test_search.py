"""Ranking against a brute-force argsort; tie order within the returned list."""

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import search
from harness.search import (
    SCORE_SHARE,
    bf16_error,
    bf16_rank,
    faiss_rank,
    l2_normalise,
    numpy_rank,
    rank,
    relevance,
    torch_rank,
)


@given(st.integers(0, 2**31), st.integers(1, 8), st.integers(1, 50), st.integers(1, 60))
def test_rank_matches_brute_force_cosine(seed, n_queries, n_gallery, k):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(n_queries, 16)).astype(np.float32)
    gallery = rng.normal(size=(n_gallery, 16)).astype(np.float32)
    scores, indices = rank(queries, gallery, k)
    sims = l2_normalise(queries) @ l2_normalise(gallery).T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    # Continuous random data has no ties, so the order is unique.
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, 1), atol=1e-5)


def torch_cpu_rank(queries, gallery, k, block):
    """``torch_rank`` as it runs on a GPU, on the CPU device (this machine may have none)."""
    return torch_rank(queries, gallery, k, "cpu", block)


def torch_cuda_rank(queries, gallery, k, block):
    return torch_rank(queries, gallery, k, "cuda", block)


def bf16_candidates_rank(queries, gallery, k, block):
    """``bf16_rank`` with its bf16 candidates, however small the gallery."""
    with mock.patch.object(search, "SHALLOW", 0), mock.patch.object(search, "CANDIDATES", 2):
        return bf16_rank(queries, gallery, k, block)


RANKERS = [faiss_rank, bf16_candidates_rank, torch_cpu_rank]
RANKERS += [torch_cuda_rank] if torch.cuda.is_available() else []


# At 5 scores at a time, a gallery block's products come in several tiles of queries, the
# last one shorter, and a shorter last block takes more queries a tile than the first.
@pytest.mark.parametrize("block_floats", [search.BLOCK_FLOATS, 5])
@pytest.mark.parametrize("ranker", RANKERS)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 20), block=st.integers(1, 7))
def test_gallery_blocks_equal_the_numpy_oracle(ranker, block_floats, seed, k, block):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(9, 12)).astype(np.float32)
    gallery = rng.normal(size=(23, 12)).astype(np.float32)
    with mock.patch.object(search, "BLOCK_FLOATS", block_floats):
        scores, indices = ranker(queries, gallery, k, block=block)
    oracle_scores, oracle_indices = numpy_rank(queries, gallery, k)
    np.testing.assert_array_equal(indices, oracle_indices)
    np.testing.assert_allclose(scores, oracle_scores, atol=1e-5)


@pytest.mark.parametrize("ranker", RANKERS)
def test_equal_scores_are_ordered_by_gallery_index(ranker):
    gallery = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    for block in (5, 2):
        query = np.array([[1, 0]], dtype=np.float32)
        scores, indices = ranker(query, gallery, 5, block=block)
        assert indices.tolist() == [[0, 2, 3, 1, 4]]
        assert scores[0, :3].tolist() == [1.0, 1.0, 1.0]


def test_relevance_counts_relevant_items_in_whole_gallery():
    gallery_labels = np.array([0, 1, 1, 2, 1])
    rel, n_rel = relevance(np.array([1, 3]), gallery_labels, np.array([[1, 0], [3, 4]]))
    assert rel.tolist() == [[True, False], [False, False]]
    assert n_rel.tolist() == [3, 0]


def test_faiss_ranks_unless_its_blas_runs_the_generic_kernel(monkeypatch):
    import threadpoolctl

    def info(kernel):
        library = {"filepath": "/x/faiss_cpu.libs/libopenblaso.so", "architecture": kernel}
        return lambda: [library]

    monkeypatch.setattr("harness.runtime.device", lambda: "cpu")
    monkeypatch.setattr("harness.runtime.cpu_has_bf16", lambda: False)
    for kernel, expected in (("SkylakeX", "faiss"), ("Prescott", "numpy"), ("Barcelona", "numpy")):
        search._host_engine.cache_clear()
        monkeypatch.setattr(threadpoolctl, "threadpool_info", info(kernel))
        assert search.engine() == expected
    search._host_engine.cache_clear()


def test_a_gpu_ranks_with_torch_and_so_does_the_cpu_when_asked(monkeypatch):
    monkeypatch.setattr("harness.runtime.device", lambda: "cuda")
    assert search.engine() == "torch"
    monkeypatch.setattr("harness.runtime.device", lambda: "cpu")
    assert search.engine() != "torch"
    monkeypatch.setenv("SHELFBENCH_TORCH_PATHS", "1")
    assert search.engine() == "torch"


def test_a_cpu_that_multiplies_bf16_faster_ranks_with_bf16_candidates(monkeypatch):
    monkeypatch.setattr("harness.runtime.device", lambda: "cpu")
    monkeypatch.setattr("harness.runtime.cpu_has_bf16", lambda: True)
    assert search.engine() == "bf16"


@given(st.integers(0, 2**31), st.integers(2, 300), st.sampled_from([1.0, 1e-3, 1e6]))
def test_a_bf16_matmul_is_within_its_bound_of_the_exact_cosine(seed, dim, scale):
    rng = np.random.default_rng(seed)
    queries = l2_normalise(rng.normal(size=(7, dim)).astype(np.float32) * scale)
    gallery = l2_normalise(rng.normal(size=(40, dim)).astype(np.float32))
    gallery[:20] = gallery[0] + 1e-3 * gallery[:20]  # near-duplicates
    gallery = l2_normalise(gallery)
    rounded = torch.from_numpy(gallery).bfloat16()
    error = float((rounded.float() - torch.from_numpy(gallery)).norm(dim=1).max())
    approx = (torch.from_numpy(queries).bfloat16() @ rounded.T).double().numpy()
    exact = queries.astype(np.float64) @ gallery.astype(np.float64).T
    bound = SCORE_SHARE * np.abs(approx) + bf16_error(queries, error)[:, None]
    assert (np.abs(approx - exact) <= bound).all()


@pytest.mark.parametrize("rows", [8, search.UNIT_ROWS])  # 50 items: 7 chunks, or one
def test_the_bf16_gallery_is_each_fp32_unit_vector_rounded_once(monkeypatch, rows):
    monkeypatch.setattr(search, "UNIT_ROWS", rows)
    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(50, 33)) * rng.lognormal(size=(50, 1))).astype(np.float32)
    vectors[7] = 0
    x = torch.from_numpy(vectors)
    norms = x.norm(dim=1, keepdim=True)
    expected = torch.where(norms > 0, x / norms, 0.0).bfloat16()
    got = search._bf16_unit(vectors)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    assert not got[7].any()


def assert_exact_top_k(queries, gallery, k, scores, indices):
    """``indices`` are a top k by exact (float64) cosine, in order, with their scores."""
    exact = l2_normalise(queries).astype(np.float64) @ l2_normalise(gallery).astype(np.float64).T
    kth = -np.sort(-exact, axis=1)[:, k - 1]
    picked = np.take_along_axis(exact, indices, 1)
    assert all(len(set(row)) == k for row in indices.tolist())
    assert (picked >= kth[:, None] - 1e-6).all()
    np.testing.assert_allclose(scores, picked, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize("rescore_floats", [1, search.RESCORE_FLOATS])  # a query at a time
@pytest.mark.parametrize("spread", [1.0, 1e-4])
def test_bf16_rank_reranks_in_fp32_and_ranks_again_what_it_cannot_prove(
    monkeypatch, spread, rescore_floats
):
    """Spread-out items: every query's candidates provably hold its top k. Near-duplicates
    (1e-4 apart, below bf16's resolution): none can be proven, and fp32 ranks them."""
    monkeypatch.setattr(search, "SHALLOW", 1)
    monkeypatch.setattr(search, "RESCORE_FLOATS", rescore_floats)
    rng = np.random.default_rng(0)
    centre = rng.normal(size=(1, 64)).astype(np.float32)
    gallery = (centre + spread * rng.normal(size=(300, 64))).astype(np.float32)
    queries = (centre + spread * rng.normal(size=(20, 64))).astype(np.float32)
    again = []
    fp32_rank = search.fp32_rank
    monkeypatch.setattr(search, "fp32_rank", lambda q, *a: again.append(len(q)) or fp32_rank(q, *a))
    scores, indices = bf16_rank(queries, gallery, 10, block=128)
    assert_exact_top_k(queries, gallery, 10, scores, indices)
    assert again == ([] if spread == 1.0 else [20])
