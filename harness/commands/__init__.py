"""The ``shelfbench`` subcommands, a module per group; each module's ``add(sub)`` adds its
parsers, each of which names the function that runs it (``run``)."""

from __future__ import annotations

import argparse

Subparsers = argparse._SubParsersAction  # what ArgumentParser.add_subparsers returns
