"""``shelfbench compare``, ``history`` and ``export``: what runs measured, compared,
over time, and the embeddings behind a cell."""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from harness.commands import Subparsers
from harness.errors import ShelfbenchError
from harness.settings import Count, Resamples, Seed, Tolerance, argument


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
    paired = {cell: old.key(row) for cell, row in new.rows.items()}
    for cell, before in paired.items():
        if before is None or before not in old.items or cell not in new.items:
            continue
        row = new.rows[cell]
        max_drop = row.gate.max_drop if args.max_drop is None else args.max_drop
        metrics = [args.metric or row.main_metric]
        for c in compare_cell(
            old.rows[before],
            old.items[before],
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
    matched = set(filter(None, paired.values()))
    for cell in sorted(set(old.rows) - matched):
        print(f"only in old: {cell} ({old.rows[cell].outcome})")
    for cell in sorted(c for c, before in paired.items() if before is None):
        print(f"only in new: {cell} ({new.rows[cell].outcome})")
    if not rows:
        raise BaselineError(
            f"{args.old} and {args.new} share no cell scored in both: nothing was compared"
        )
    worse = sum(1 for r in rows if r[-1].startswith("worse"))
    print(f"{len(rows)} compared: {worse} significantly worse, {regressions} beyond tolerance")
    return 1 if regressions else 0


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


def _add_compare(sub: Subparsers) -> None:
    compare = sub.add_parser(
        "compare", help="compare two runs cell by cell; exit 1 on a regression beyond tolerance"
    )
    compare.add_argument("old", type=Path, help="a report .json (its .items.npz beside it)")
    compare.add_argument("new", type=Path)
    compare.add_argument("--metric", help="metric to compare (default: each cell's main one)")
    compare.add_argument(
        "--max-drop", type=argument(Tolerance), help="tolerance (default: the suite's)"
    )
    compare.add_argument("--resamples", type=argument(Resamples), default=1000)
    compare.add_argument("--seed", type=argument(Seed), default=0)
    compare.set_defaults(run=_compare)


def _add_history(sub: Subparsers) -> None:
    past = sub.add_parser("history", help="each cell's main metric run after run")
    past.add_argument("reports", type=Path, nargs="?", default=Path("reports"))
    past.add_argument("--mlflow", metavar="URI", help="read an MLflow experiment instead")
    past.add_argument("--cell", default="*", help="cells matching this glob (default all)")
    past.add_argument("--last", type=argument(Count), help="only the newest N runs")
    past.set_defaults(run=_history)


def _add_export(sub: Subparsers) -> None:
    export = sub.add_parser("export", help="write the embeddings and labels a cell uses")
    export.add_argument(
        "cell", help="cell id (fashion-mnist/effnet-lite0/knn) or node id (FILE::CELL)"
    )
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


def add(sub: Subparsers) -> None:
    _add_compare(sub)
    _add_history(sub)
    _add_export(sub)
