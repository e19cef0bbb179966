"""``shelfbench check`` and ``keys``: suite files checked, and every key they take."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import Subparsers


def _check(args: argparse.Namespace) -> None:
    """Load each suite file as a run would (names, kinds and ranges, paths), run nothing."""
    from harness.suite import load_suite

    for path in args.suites:
        suite = load_suite(path)
        print(f"{path}: suite {suite.name!r}, {len(suite.cells)} cells, every setting valid")


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
