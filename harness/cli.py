"""The ``shelfbench`` command: list registries, fetch data, export a cell's embeddings.

Benchmarks themselves run under pytest (``pytest suites/``); this command does the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

from harness.errors import ShelfbenchError


def _list(args: argparse.Namespace) -> None:
    if args.what == "datasets":
        from harness.datasets import DATASETS

        rows = [
            [d.name, d.domain, len(d.classes), ",".join(d.splits), d.protocol, d.source]
            for d in DATASETS
        ]
        headers = ["name", "domain", "classes", "splits", "protocol", "source"]
    elif args.what == "backbones":
        from harness.backbones import BACKBONES

        rows = [
            [b.name, b.family, b.kind, b.source, b.model, b.embed_dim, b.weights.source]
            for b in BACKBONES
        ]
        headers = ["name", "family", "kind", "source", "model", "dim", "weights"]
    else:
        from harness.strategies import STRATEGIES

        rows = [[s.name, s.main_metric, s.description] for s in STRATEGIES]
        headers = ["name", "main metric", "description"]
    print(tabulate(rows, headers))


def _fetch(args: argparse.Namespace) -> None:
    from harness.datasets import DATASETS
    from harness.paths import cache_root

    spec = DATASETS.get(args.name)
    if spec.fetch is None:
        raise ShelfbenchError(f"{args.name} has no download; its source: {spec.source}")
    print(f"{args.name} is in {spec.fetch(args.root or cache_root() / 'data')}")


def _export(args: argparse.Namespace) -> None:
    from harness.cell import cell_embeddings
    from harness.paths import cache_root
    from harness.suite import find_cell, load_suite

    cell = (
        load_suite(args.suite).cell(args.cell)
        if args.suite
        else find_cell(args.cell, args.suites_dir)
    )
    embedded = cell_embeddings(cell, args.cache or cache_root())
    args.out.mkdir(parents=True, exist_ok=True)
    for split, e in embedded.items():
        np.save(args.out / f"{split}.npy", e.vectors)
        np.save(args.out / f"{split}_labels.npy", e.labels)
        np.save(args.out / f"{split}_indices.npy", e.indices)
    meta = {
        "cell": cell.id,
        "suite": cell.suite,
        "note": "raw backbone embeddings; L2-normalise them for cosine retrieval",
        "keys": {split: e.key for split, e in embedded.items()},
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {cell.id} embeddings to {args.out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shelfbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list registered datasets, backbones or strategies")
    ls.add_argument("what", choices=["datasets", "backbones", "strategies"])
    ls.set_defaults(run=_list)

    data = sub.add_parser("data", help="dataset files")
    data_sub = data.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a dataset")
    fetch.add_argument("name")
    fetch.add_argument("--root", type=Path, help="target directory (default: the cache)")
    fetch.set_defaults(run=_fetch)

    export = sub.add_parser("export", help="write the embeddings and labels a cell uses")
    export.add_argument("cell", help="cell id, e.g. fashion-mnist/effnet-lite0/knn")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--suite", type=Path, help="suite file (default: search --suites-dir)")
    export.add_argument("--suites-dir", type=Path, default=Path("suites"))
    export.add_argument("--cache", type=Path, help="embedding cache (default $SHELFBENCH_CACHE)")
    export.set_defaults(run=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ShelfbenchError as exc:
        print(f"shelfbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shelfbench: interrupted; finished batches are kept in the cache", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
