"""The ``shelfbench`` command: list registries, fetch data, export a cell's embeddings.

Benchmarks themselves run under pytest (``pytest suites/``); this command does the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.errors import ShelfbenchError


def _list(args: argparse.Namespace) -> None:
    if args.suite is not None:  # registers the suite's own datasets and backbones
        from harness.suite import load_suite

        load_suite(args.suite)
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
            [
                b.name,
                b.family,
                b.kind,
                b.source,
                b.identifier,
                b.embed_dim or "from model",
                b.pooling,
                _availability(b),
            ]
            for b in BACKBONES
            if args.family in (None, b.family)
        ]
        if args.available:
            rows = [row for row in rows if row[-1] in ("user", "hf-cache", "package", "random")]
        headers = ["name", "family", "kind", "source", "identifier", "dim", "pooling", "weights"]
    else:
        from harness.strategies import STRATEGIES

        rows = [
            [f"{s.name}:{s.argument}" if s.argument else s.name, s.main_metric, s.description]
            for s in STRATEGIES
        ]
        headers = ["name", "main metric", "description"]
    print(tabulate(rows, headers))


def _availability(spec: Any) -> str:
    """Where the weights would come from: user, hf-cache, package, random; or why not."""
    from harness.backbones import resolve
    from harness.errors import Unavailable

    try:
        return resolve(spec).origin
    except Unavailable:
        return "missing"
    except ShelfbenchError:
        return "invalid (run `shelfbench weights verify`)"


def _backbones(names: list[str], suites_dir: Path) -> list[Any]:
    """Backbone specs named directly, or used by a suite (a name in suites_dir or a path)."""
    from harness.backbones import BACKBONES
    from harness.suite import load_suite

    specs: dict[str, Any] = {}
    for name in names:
        path = Path(name) if name.endswith(".toml") else suites_dir / f"{name}.toml"
        if name not in BACKBONES and path.is_file():
            for cell in load_suite(path).cells:
                specs.setdefault(cell.backbone, BACKBONES.get(cell.backbone))
        else:
            specs.setdefault(name, BACKBONES.get(name))
    return list(specs.values())


def _weights(args: argparse.Namespace) -> None:
    from harness.backbones import weights
    from harness.errors import Unavailable

    failed = 0
    for spec in _backbones(args.names, args.suites_dir):
        try:
            if args.action == "fetch":
                found = weights.fetch(spec)
                print(f"ok       {spec.name}: {found.path} ({found.origin})")
            else:
                print(f"ok       {spec.name}: {_verify_weights(spec)}")
        except Unavailable as exc:
            failed += 1
            print(f"missing  {spec.name}: {exc}")
        except ShelfbenchError as exc:
            failed += 1
            print(f"invalid  {spec.name}: {exc}")
    if failed:
        raise ShelfbenchError(f"{failed} backbone(s) without usable weights; see above")


def _verify_weights(spec: Any) -> str:
    """Re-hash what resolution finds (ignoring the hash memo) and compare it with the hash
    that pins it (the registry's, or a Hugging Face blob's name); a file nothing pins must
    still load as the loader would load it."""
    from harness.backbones.checkpoints import load_state
    from harness.backbones.weights import hash_file, hub_blob_sha256, resolve

    found = resolve(spec)
    if found.path is None or found.path.is_dir():
        return f"{found.origin}, sha256 {found.sha256[:12]}…"
    actual = hash_file(found.path)
    expected = spec.weights.sha256 or hub_blob_sha256(found.path)
    if not expected:
        load_state(found.path)
        return (
            f"{found.path} ({found.origin}), sha256 {actual[:12]}…; unverified: no recorded "
            "hash (it loads as tensors)"
        )
    if actual != expected:
        raise ShelfbenchError(
            f"{found.path}: sha256 {actual[:12]}… but expected "
            f"{expected[:12]}…; delete it and fetch it again"
        )
    return f"{found.path} ({found.origin}), sha256 {actual[:12]}… verified"


def _fetch(args: argparse.Namespace) -> None:
    from harness.datasets import DATASETS
    from harness.paths import cache_root, directory

    spec = DATASETS.get(args.name)
    if spec.fetch is None:
        raise ShelfbenchError(f"{args.name} has no download; its source: {spec.source}")
    root = directory(args.root or cache_root() / "data", "data fetch --root")
    print(f"{args.name} is in {spec.fetch(root)}")


def _verify_data(args: argparse.Namespace) -> int:
    from harness.datasets import DATASETS, open_dataset, public

    DATASETS.get(args.name)
    if args.name not in public.FACTS:
        dataset = open_dataset(args.name)  # its loader checks every file's hash
        print(f"{args.name}: {sum(len(s) for s in dataset.splits.values())} items, verified")
        return 0
    problems = public.verify(args.name, args.root / args.name if args.root else None)
    facts = public.FACTS[args.name]
    for problem in problems:
        print(f"{args.name}: {problem}")
    if problems:
        print(f"{args.name}: differs from the release ({facts.reference})")
        return 1
    print(f"{args.name}: counts and classes as published; every listed file is present")
    return 0


def _export(args: argparse.Namespace) -> None:
    from harness.cell import cell_embeddings
    from harness.export import write_npy, write_parquet
    from harness.ownership import check_export_dir, check_vectors_target
    from harness.paths import cache_root, directory
    from harness.suite import find_cell, load_suite

    parquet = args.format == "parquet"
    (check_vectors_target if parquet else check_export_dir)(args.out)
    cell = (
        load_suite(args.suite).cell(args.cell)
        if args.suite
        else find_cell(args.cell, args.suites_dir)
    )
    embedded = cell_embeddings(cell, directory(args.cache or cache_root(), "--cache"))
    (write_parquet if parquet else write_npy)(args.out, cell, embedded)
    print(f"wrote {cell.id} embeddings to {args.out}")


def _compare(args: argparse.Namespace) -> int:
    from harness.baseline import BaselineError, compare_cell, load_run

    old, new = load_run(args.old), load_run(args.new)
    rows, regressions = [], 0
    for cell in [c for c in new.rows if c in old.rows and c in new.items and c in old.items]:
        row = new.rows[cell]
        max_drop = row.gate.get("max_drop", 0.01) if args.max_drop is None else args.max_drop
        metrics = [args.metric or row.main_metric]
        for c in compare_cell(
            old.rows[cell],
            old.items[cell],
            row,
            new.items[cell],
            metrics,
            max_drop,
            args.resamples,
            args.seed,
        ):
            regressions += c.regression
            rows.append(
                [
                    cell,
                    c.metric,
                    f"{c.old:.4f}",
                    f"{c.new:.4f}",
                    f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}]",
                    f"{c.max_drop:.4f}",
                    c.verdict + (" (regression)" if c.regression else ""),
                ]
            )
    print(
        tabulate(
            rows,
            ["cell", "metric", "old", "new", "new - old [95% CI]", "tolerance", "verdict"],
            disable_numparse=True,
        )
    )
    for label, run, other in (("only in old", old, new), ("only in new", new, old)):
        for cell in sorted(set(run.rows) - set(other.rows)):
            print(f"{label}: {cell} ({run.rows[cell].outcome})")
    if not rows:
        raise BaselineError(
            f"{args.old} and {args.new} share no cell scored in both: nothing was compared"
        )
    worse = sum(1 for r in rows if r[-1].startswith("worse"))
    print(f"{len(rows)} compared: {worse} significantly worse, {regressions} beyond tolerance")
    return 1 if regressions else 0


def _check(args: argparse.Namespace) -> None:
    """Load each suite file as a run would (names, kinds and ranges, paths), run nothing."""
    from harness.suite import load_suite

    for path in args.suites:
        suite = load_suite(path)
        print(f"{path}: suite {suite.name!r}, {len(suite.cells)} cells, every setting valid")


def _history(args: argparse.Namespace) -> int:
    """Per cell, one line per run: date, commit, weights, main metric [95% CI], change and
    whether it is significant (paired, where both runs kept their items)."""
    from fnmatch import fnmatchcase

    from harness import history

    if args.mlflow:
        from harness.tracking import check_server

        check_server(args.mlflow)
        found = history.from_mlflow(args.mlflow)
        where = f"MLflow at {args.mlflow}"
    else:
        from harness.paths import directory

        directory(args.reports, "reports directory")
        found = history.from_reports(args.reports, last=args.last)
        where = f"{args.reports}/runs"
    found = {cell: points for cell, points in found.items() if fnmatchcase(cell, args.cell)}
    if not found:
        raise ShelfbenchError(f"no run in {where} scored a cell matching {args.cell!r}")
    print("\n".join(history.lines(found)))
    drops = sum(p.drop for points in found.values() for p in points)
    print(f"{len(found)} cells; {drops} significant drops between consecutive runs")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shelfbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate suite files without running anything")
    check.add_argument("suites", nargs="+", type=Path, help="suite .toml files")
    check.set_defaults(run=_check)

    ls = sub.add_parser("list", help="list registered datasets, backbones or strategies")
    ls.add_argument("what", choices=["datasets", "backbones", "strategies"])
    ls.set_defaults(run=_list)

    ls.add_argument("--family", choices=["supervised", "ssl", "contrastive", "untrained"])
    ls.add_argument(
        "--available", action="store_true", help="only backbones whose weights are here"
    )
    ls.add_argument(
        "--suite", type=Path, help="also the datasets and backbones this suite file declares"
    )

    weights = sub.add_parser("weights", help="backbone weights")
    weights_sub = weights.add_subparsers(dest="action", required=True)
    for action, text in [
        ("fetch", "download weights into the Hugging Face cache (needs the network)"),
        ("verify", "re-hash the weights on this machine and compare with the expected sha256"),
    ]:
        w = weights_sub.add_parser(action, help=text)
        w.add_argument("names", nargs="+", help="backbone names, or suite names or files")
        w.add_argument("--suites-dir", type=Path, default=Path("suites"))
        w.set_defaults(run=_weights)

    compare = sub.add_parser(
        "compare", help="compare two runs cell by cell; exit 1 on a regression beyond tolerance"
    )
    compare.add_argument("old", type=Path, help="a report .json (its .items.npz beside it)")
    compare.add_argument("new", type=Path)
    compare.add_argument("--metric", help="metric to compare (default: each cell's main one)")
    compare.add_argument("--max-drop", type=float, help="tolerance (default: the suite's)")
    compare.add_argument("--resamples", type=int, default=1000)
    compare.add_argument("--seed", type=int, default=0)
    compare.set_defaults(run=_compare)

    data = sub.add_parser("data", help="dataset files")
    data_sub = data.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a dataset")
    fetch.add_argument("name")
    fetch.add_argument("--root", type=Path, help="target directory (default: the cache)")
    fetch.set_defaults(run=_fetch)
    check = data_sub.add_parser("verify", help="check a dataset's counts, classes and files")
    check.add_argument("name")
    check.add_argument("--root", type=Path, help="the folder holding NAME/ (default: search)")
    check.set_defaults(run=_verify_data)

    past = sub.add_parser("history", help="each cell's main metric run after run")
    past.add_argument("reports", type=Path, nargs="?", default=Path("reports"))
    past.add_argument("--mlflow", metavar="URI", help="read an MLflow experiment instead")
    past.add_argument("--cell", default="*", help="cells matching this glob (default all)")
    past.add_argument("--last", type=int, default=None, help="only the newest N runs")
    past.set_defaults(run=_history)

    export = sub.add_parser("export", help="write the embeddings and labels a cell uses")
    export.add_argument("cell", help="cell id, e.g. fashion-mnist/effnet-lite0/knn")
    export.add_argument(
        "--out", type=Path, required=True, help="a folder (npy), or the .parquet file to write"
    )
    export.add_argument(
        "--format",
        choices=["npy", "parquet"],
        default="npy",
        help="npy: arrays per split; parquet: a vectors table (id, split, label, vector)",
    )
    export.add_argument("--suite", type=Path, help="suite file (default: search --suites-dir)")
    export.add_argument("--suites-dir", type=Path, default=Path("suites"))
    export.add_argument("--cache", type=Path, help="embedding cache (default $SHELFBENCH_CACHE)")
    export.set_defaults(run=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = args.run(args)
    except ShelfbenchError as exc:
        print(f"shelfbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shelfbench: interrupted; finished batches are kept in the cache", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
