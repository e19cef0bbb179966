"""The ``shelfbench`` command: check suites, list registries, fetch weights and data,
compare runs, export a cell's embeddings (``harness.commands``).

Benchmarks themselves run under pytest (``pytest suites/``); this command does the rest.
"""

from __future__ import annotations

import argparse
import sys

from harness.errors import ShelfbenchError


def parser() -> argparse.ArgumentParser:
    from harness.commands import registries, runs, suites

    p = argparse.ArgumentParser(
        prog="shelfbench",
        description="Check suites, list registries, fetch weights and data, compare runs, "
        "export a cell's embeddings. The benchmarks run under pytest: pytest suites/",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for group in (suites, registries, runs):
        group.add(sub)
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
