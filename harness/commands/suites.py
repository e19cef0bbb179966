"""``shelfbench check`` and ``keys``: suite files checked, and every key they take."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import Subparsers


def _check(args: argparse.Namespace) -> int:
    """Load each suite file as a run would (names, kinds and ranges, paths), run nothing;
    a local file or folder a table names that is not there is a problem too (a run would
    skip, or under a gate fail, its cells). Exit status 1 where any suite has one."""
    from harness.suite import load_suite
    from harness.suite_file import missing_paths

    status = 0
    for path in args.suites:
        suite = load_suite(path)
        if missing := missing_paths(path):
            print("\n".join(f"{path}: {line}" for line in missing))
            status = 1
            continue
        print(f"{path}: suite {suite.name!r}, {len(suite.cells)} cells, every setting valid")
    return status


def _add_check(sub: Subparsers) -> None:
    check = sub.add_parser("check", help="validate suite files without running anything")
    check.add_argument("suites", nargs="+", type=Path, help="suite .toml files")
    check.set_defaults(run=_check)


def _keys(args: argparse.Namespace) -> None:
    from harness.keys import markdown

    print(markdown(), end="")


def _add_keys(sub: Subparsers) -> None:
    keys = sub.add_parser(
        "keys", help="every key a suite file takes, with its kind, range and default"
    )
    keys.set_defaults(run=_keys)


def add(sub: Subparsers) -> None:
    _add_check(sub)
    _add_keys(sub)
