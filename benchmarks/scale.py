"""The metric side of one ``knn`` cell at the study's real sizes, on synthetic embeddings.

    python benchmarks/scale.py PRESET [--dim 768] [--resamples 1000] [--linear] [--fp32-too]

Everything after the backbone runs as a cell runs it: exact search, retrieval and kNN
classification metrics, a bootstrap interval for every metric, the paired comparison (of
the run against itself), and the report rows. The embeddings are clustered Gaussians: a
centre per class (standard deviation ``--spread`` per dimension) plus unit noise, classes
of equal size; the default spread leaves Recall@1 near 0.5 at 14 items per class, so
the metrics are neither 0 nor 1. The last line printed is one JSON object: preset, sizes,
seconds, peak RSS, the ranking engine, the metrics, and with ``--linear`` the linear
probe's seconds and accuracy (on CUDA when there is a GPU). Where the CPU ranks with bf16
candidates (``search.bf16_rank``), the JSON says how many queries it ranked again in fp32,
and ``--fp32-too`` runs the knn cell again with the fp32 engine, in the same process,
giving the ratio of their seconds and the largest difference between their metrics.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from unittest import mock

import numpy as np

from harness import document, report, runtime, search
from harness.row import CellRow
from harness.runtime import device
from harness.stats import bootstrap_ci, paired_difference
from harness.strategies import STRATEGIES, Features

# name: (queries, gallery, classes, protocol); leave-one-out queries its own gallery.
PRESETS = {
    "sop": (60_502, 60_502, 11_316, "leave-one-out"),
    "products-10k": (55_375, 141_931, 9_691, "split"),
    "rp2k": (39_457, 344_829, 2_388, "split"),
    "catalogue-1m": (10_000, 1_000_000, 50_000, "split"),
    "toy": (200, 2_000, 50, "split"),  # CI runs every benchmark at a toy size
}


def clustered(
    n: int, centres: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items in equal classes around ``centres``, made in chunks (float32 only)."""
    labels = np.arange(n) % len(centres)
    rng.shuffle(labels)
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for start in range(0, n, 65536):
        part = labels[start : start + 65536]
        noisy = rng.standard_normal((len(part), centres.shape[1]), dtype=np.float32)
        out[start : start + 65536] = centres[part] + noisy
    return out, labels


def synthetic(preset: str, dim: int = 768, spread: float = 0.32) -> Features:
    """The preset's embeddings as a cell's features: seeded class centres, then the
    gallery and the queries around them (under leave-one-out the queries are the gallery),
    at the precision a cell runs at here (``runtime.resolve_precision``)."""
    n_query, n_gallery, n_classes, protocol = PRESETS[preset]
    rng = np.random.default_rng(0)
    centres = spread * rng.standard_normal((n_classes, dim), dtype=np.float32)
    if protocol == "split":
        gallery, gallery_labels = clustered(n_gallery, centres, rng)
        queries, query_labels = clustered(n_query, centres, rng)
    else:
        queries, query_labels = clustered(n_query, centres, rng)
        gallery, gallery_labels = queries, query_labels
    precision = runtime.resolve_precision("auto")
    return Features(
        gallery,
        gallery_labels,
        queries,
        query_labels,
        n_classes,
        protocol=protocol,
        precision=precision,
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--spread", type=float, default=0.32)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--linear", action="store_true", help="also fit the linear probe")
    parser.add_argument("--fp32-too", action="store_true", help="also rank in fp32, compare")
    args = parser.parse_args()
    n_query, n_gallery, n_classes, _ = PRESETS[args.preset]
    data = synthetic(args.preset, args.dim, args.spread)
    print(f"{args.preset}: data ready, peak RSS {peak_rss_mb():.0f} MB", flush=True)

    engine = search.engine()
    start = time.perf_counter()
    knn = STRATEGIES.get("knn")
    # bf16_rank ranks again in fp32 the queries it could not prove: count them
    with mock.patch.object(search, "fp32_rank", wraps=search.fp32_rank) as fp32_rank:
        outcome = knn.run(data, knn.params({}))
    ranked_again = sum(len(call.args[0]) for call in fp32_rank.call_args_list)
    searched = time.perf_counter() - start
    metrics = outcome.metrics
    ci = {m: bootstrap_ci(outcome.items, m, args.resamples, 0) for m in metrics}
    diff = paired_difference(outcome.items, outcome.items, knn.main_metric, args.resamples, 0)
    row = CellRow(
        id=f"{args.preset}/synthetic/knn",
        dataset=args.preset,
        backbone="synthetic",
        strategy="knn",
        metrics=metrics,
        ci={m: list(interval) for m, interval in ci.items()},
        seconds={"fit": searched, "eval": 0.0},
    )
    document.markdown(
        [
            report.table([row], report.metric_columns([row])),
            report.interval_table([row], report.metric_columns([row], headline=True)),
        ]
    )
    result = {
        "preset": args.preset,
        "n_query": n_query,
        "n_gallery": n_gallery,
        "classes": n_classes,
        "dim": args.dim,
        "seconds": round(time.perf_counter() - start, 1),
        "search_and_metrics_seconds": round(searched, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "ranking": engine,
        "ranked_again_in_fp32": ranked_again if engine == "bf16" else None,
        "resamples": args.resamples,
        "paired_self_difference": diff,
        "metrics": {m: round(v, 4) for m, v in metrics.items()},
    }
    if args.fp32_too and engine == "bf16":
        # only for this run: --linear after it fits at the cell's precision
        with mock.patch.object(runtime, "cpu_has_bf16", lambda: False):
            start = time.perf_counter()
            again = knn.run(data, knn.params({}))
            seconds = time.perf_counter() - start
            fp32_engine = search.engine()
        result["fp32"] = {
            "ranking": fp32_engine,
            "search_and_metrics_seconds": round(seconds, 1),
            "fp32 / bf16": round(seconds / searched, 2),
            "largest metric difference": max(abs(again.metrics[m] - v) for m, v in metrics.items()),
        }
    if args.linear:
        linear = STRATEGIES.get("linear")
        start = time.perf_counter()
        probe = linear.run(data, linear.params({}))
        result["linear"] = {
            "seconds": round(time.perf_counter() - start, 1),
            "device": device(),
            "accuracy": round(probe.metrics["accuracy"], 4),
            "C": probe.chosen["C"],
            "precision": probe.chosen["precision"],
            "peak_rss_mb": round(peak_rss_mb()),
        }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
