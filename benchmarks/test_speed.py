"""Speed benchmarks (`tox -e bench`): each shelfbench code path beside the naive one in the
same run, so the figure to read is their ratio, not an absolute time on a shared machine."""

from typing import Any

import numpy as np
import pytest

from harness.search import faiss_rank, numpy_rank, rank

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
