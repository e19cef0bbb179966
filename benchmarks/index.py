"""Task metrics under approximate indexes against exact search, on real or synthetic
embeddings at the study's sizes.

    python benchmarks/index.py default|PRESET [--index ENGINE:SPEC?NAME=VALUE&...]...

``default`` is the default suite's Fashion-MNIST × EfficientNet-Lite0 knn cell (its cached
embeddings; computed on a miss); a ``benchmarks/scale.py`` preset (``products-10k``,
``catalogue-1m``, ...) draws that preset's synthetic clustered embeddings. Exact search
runs once; then, for each ``--index`` (default: HNSW32 at three efSearch values, IVF-PQ at
two code sizes, Milvus HNSW), the knn cell's metrics under it, the loss of the main metric
against exact with its paired-bootstrap interval, neighbour recall, latency, QPS, build
time and memory. One JSON line per setting; the first line is exact search.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from harness.index import Built, IndexSetting, build, measure, neighbour_recall
from harness.search import l2_normalise
from harness.stats import bootstrap_ci, paired_difference, summarise
from harness.strategies import STRATEGIES, Features
from harness.strategies.knn import retrieval, vote

ROOT = Path(__file__).parents[1]
DEFAULT_CELL = "fashion-mnist/effnet-lite0/knn"


def default_cell() -> Features:
    """The default suite's knn cell's embeddings, as the cell reads them."""
    from harness.cell import cell_embeddings
    from harness.datasets import open_dataset
    from harness.paths import cache_root
    from harness.suite import load_suite

    cell = load_suite(ROOT / "suites" / "default.toml").cell(DEFAULT_CELL)
    got = cell_embeddings(cell, cache_root())
    classes = open_dataset(cell.dataset).classes
    train, test = got["train"], got["test"]
    return Features(train.vectors, train.labels, test.vectors, test.labels, len(classes))


def default_settings(n_gallery: int) -> list[str]:
    """The issue's comparison: HNSW32 at three efSearch values, IVF-PQ at 8 and 32 bytes
    per vector with about 4·√N lists, Milvus HNSW (M = 32)."""
    lists = 2 ** round(math.log2(4 * math.sqrt(n_gallery)))
    return [
        *(f"faiss:HNSW32?efSearch={ef}" for ef in (16, 64, 256)),
        *(f"faiss:IVF{lists},PQ{m}?nprobe=16" for m in (8, 32)),
        "milvus:HNSW?ef=64&build.M=32&build.efConstruction=200",
    ]


def parse(text: str) -> IndexSetting:
    """``ENGINE:SPEC?name=value&build.name=value``: search and build parameters."""
    head, _, query = text.partition("?")
    engine, _, spec = head.partition(":")
    search, build = {}, {}
    for name, value in parse_qsl(query):
        number = float(value) if "." in value else int(value)
        if name.startswith("build."):
            build[name.removeprefix("build.")] = number
        else:
            search[name] = number
    return IndexSetting(engine, spec, search, {"build": build})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="'default' or a benchmarks/scale.py preset")
    parser.add_argument("--index", action="append", help="ENGINE:SPEC?search=value&...")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    if args.data == "default":
        data = default_cell()
    else:
        from scale import synthetic  # the same embeddings benchmarks/scale.py measures

        data = synthetic(args.data)
    knn = STRATEGIES.get("knn")
    params = knn.params({})
    main_metric = knn.main_metric
    start = time.perf_counter()
    exact = retrieval(data, data.train, data.test, params["neighbours"])
    exact_seconds = time.perf_counter() - start
    reference = vote(data, exact, params)
    common = {"data": args.data, "n_query": len(data.test), "n_gallery": len(data.train)}
    value = summarise(reference)[main_metric]
    ci = bootstrap_ci(reference, main_metric, args.resamples, 0)
    print(
        json.dumps(
            {
                **common,
                "index": "exact",
                main_metric: [round(v, 4) for v in (value, *ci)],
                "qps": round(len(data.test) / exact_seconds),
            }
        ),
        flush=True,
    )
    depth = exact.neighbours.shape[1]
    gallery = l2_normalise(data.train)
    built: Built | None = None
    built_as = None
    for text in args.index or default_settings(len(data.train)):
        setting = parse(text)
        same = (setting.engine, setting.spec, str(setting.options))
        if same != built_as:  # settings that differ only in search share one build
            if built is not None:
                built.close()
            built, build_seconds = build(gallery, setting)
            built_as = same
        assert built is not None
        built.tune(setting.search)
        cost: dict[str, Any] = {}

        def ranker(
            queries: np.ndarray, _: np.ndarray, k: int, built: Built = built, cost: dict = cost
        ) -> tuple[np.ndarray, np.ndarray]:
            scores, indices, measured = measure(built, l2_normalise(queries), k)
            cost.update(measured)
            return scores, indices

        ranking = retrieval(data, data.train, data.test, params["neighbours"], ranker)
        items = vote(data, ranking, params)
        value = summarise(items)[main_metric]
        ci = bootstrap_ci(items, main_metric, args.resamples, 0)
        loss = paired_difference(items, reference, main_metric, args.resamples, 0)
        recall = {
            f"neighbour_recall@{k}": round(
                neighbour_recall(ranking.neighbours, exact.neighbours, k), 4
            )
            for k in (10, depth)
        }
        line = {
            **common,
            "index": setting.label,
            main_metric: [round(v, 4) for v in (value, *ci)],
            "loss": [round(v, 4) for v in loss],
            **recall,
            "build_seconds": round(build_seconds, 1),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in cost.items()},
        }
        print(json.dumps(line), flush=True)
    if built is not None:
        built.close()


if __name__ == "__main__":
    main()
