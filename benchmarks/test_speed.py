"""Speed benchmarks (`tox -e bench`): each shelfbench code path beside the naive one in the
same run, so the figure to read is their ratio, not an absolute time on a shared machine."""

from typing import Any

import numpy as np
import pytest

from harness.runtime import cpu_has_bf16
from harness.search import bf16_rank, faiss_rank, fp32_rank, numpy_rank, rank

ROUNDS = {"rounds": 3, "iterations": 1, "warmup_rounds": 1}


@pytest.fixture(scope="module")
def lite0() -> Any:
    from harness.backbones import BACKBONES, resolve
    from harness.backbones.build import build_model

    spec = BACKBONES.get("effnet-lite0")
    return build_model(spec, resolve(spec))


@pytest.fixture(scope="module")
def batch() -> Any:
    import torch

    return torch.rand(32, 3, 128, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.benchmark(group="embed lite0, 32 images at 128 px")
def test_embed_naive(benchmark: Any, lite0: Any, batch: Any) -> None:
    import torch

    lite0.to(memory_format=torch.contiguous_format)

    def run() -> Any:
        with torch.no_grad():
            return lite0(batch.contiguous())

    benchmark.pedantic(run, **ROUNDS)


@pytest.mark.benchmark(group="embed lite0, 32 images at 128 px")
def test_embed_shelfbench(benchmark: Any, lite0: Any, batch: Any) -> None:
    import torch

    lite0.to(memory_format=torch.channels_last)
    x = batch.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode():
            return lite0(x)

    benchmark.pedantic(run, **ROUNDS)


@pytest.fixture(scope="module")
def gallery() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(2000, 1280)).astype(np.float32), rng.normal(size=(10000, 1280)).astype(
        np.float32
    )


@pytest.mark.benchmark(group="rank 2k queries x 10k gallery, top 1050")
def test_rank_naive_full_sort(benchmark: Any, gallery: tuple[np.ndarray, np.ndarray]) -> None:
    queries, items = gallery

    def run() -> Any:
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        g = items / np.linalg.norm(items, axis=1, keepdims=True)
        return np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :1050]

    benchmark.pedantic(run, **ROUNDS)


@pytest.mark.benchmark(group="rank 2k queries x 10k gallery, top 1050")
def test_rank_shelfbench(benchmark: Any, gallery: tuple[np.ndarray, np.ndarray]) -> None:
    """What cells use: faiss, or numpy where faiss's BLAS runs a generic kernel."""
    queries, items = gallery
    benchmark.pedantic(rank, args=(queries, items, 1050), **ROUNDS)


@pytest.mark.benchmark(group="rank 2k queries x 10k gallery, top 1050")
def test_rank_faiss(benchmark: Any, gallery: tuple[np.ndarray, np.ndarray]) -> None:
    queries, items = gallery
    benchmark.pedantic(faiss_rank, args=(queries, items, 1050), **ROUNDS)


@pytest.mark.benchmark(group="rank 2k queries x 10k gallery, top 1050")
def test_rank_numpy_oracle(benchmark: Any, gallery: tuple[np.ndarray, np.ndarray]) -> None:
    queries, items = gallery
    benchmark.pedantic(numpy_rank, args=(queries, items, 1050), **ROUNDS)


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    """1,000 queries and a 200,000-item gallery of 768, in 10,000 classes (the shape of
    ``benchmarks/scale.py``'s presets: a shallow ranking of a large gallery)."""
    from scale import clustered

    rng = np.random.default_rng(0)
    centres = 0.32 * rng.standard_normal((10_000, 768), dtype=np.float32)
    return clustered(1000, centres, rng)[0], clustered(200_000, centres, rng)[0]


EXACT = "exact search, 1k queries x 200k gallery of 768, top 20"


@pytest.mark.benchmark(group=EXACT)
def test_exact_search_fp32(benchmark: Any, catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    """The fp32 engine: faiss, or numpy where faiss's BLAS runs a generic kernel."""
    benchmark.pedantic(fp32_rank, args=(*catalogue, 20), **ROUNDS)


@pytest.mark.benchmark(group=EXACT)
@pytest.mark.skipif(not cpu_has_bf16(), reason="bf16 is not faster on this CPU")
def test_exact_search_bf16_candidates(
    benchmark: Any, catalogue: tuple[np.ndarray, np.ndarray]
) -> None:
    """bf16 candidates, re-scored in fp32: the same top 20 (tests/test_search.py)."""
    benchmark.pedantic(bf16_rank, args=(*catalogue, 20), **ROUNDS)


@pytest.fixture(scope="module")
def embeddings() -> Any:
    """Features shaped like a cell's (10 classes, L2-normalised, overlapping clusters) at
    a size 2 cores fit several times over: 4,000 train and 1,000 test items of 512."""
    from harness.strategies import Features

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 512)).astype(np.float32)

    def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        labels = np.arange(n) % 10
        x = centres[labels] + 2.5 * r.normal(size=(n, 512)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True), labels

    (train, train_labels), (test, test_labels) = split(4000, 1), split(1000, 2)
    return Features(train, train_labels, test, test_labels, 10)


PROBE = "linear probe: a 5-C path on a validation split, then a refit (4k x 512, 10 classes)"


@pytest.mark.benchmark(group=PROBE)
def test_probe_scikit_learn(benchmark: Any, embeddings: Any) -> None:
    """The naive path: scikit-learn's LogisticRegression per C, warm-started, then refit."""
    from sklearn.linear_model import LogisticRegression

    from harness.strategies.linear import stratified_holdout

    data = embeddings
    held = stratified_holdout(data.train_labels, 0.2, 0)

    def run() -> Any:
        model = LogisticRegression(warm_start=True, max_iter=1000)
        scores = {}
        for c in (0.1, 1.0, 10.0, 100.0, 1000.0):
            model.set_params(C=c).fit(data.train[~held], data.train_labels[~held])
            scores[c] = model.score(data.train[held], data.train_labels[held])
        best = max(scores, key=lambda c: (scores[c], -c))
        return (
            model.set_params(C=best)
            .fit(data.train, data.train_labels)
            .score(data.test, data.test_labels)
        )

    benchmark.pedantic(run, **ROUNDS)


@pytest.mark.benchmark(group=PROBE)
def test_probe_shelfbench(benchmark: Any, embeddings: Any) -> None:
    from harness.strategies import STRATEGIES

    linear = STRATEGIES.get("linear")
    params = linear.params({})
    benchmark.pedantic(lambda: linear.run(embeddings, params), **ROUNDS)
