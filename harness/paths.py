"""Where shelfbench keeps data, downloads and caches (overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SHELFBENCH_CACHE``, default ``~/.cache/shelfbench``."""
    return Path(os.environ.get("SHELFBENCH_CACHE", Path.home() / ".cache" / "shelfbench"))


def data_roots() -> list[Path]:
    """Directories searched for datasets, in order: ``$SHELFBENCH_DATA``, then downloads."""
    roots = [Path(os.environ["SHELFBENCH_DATA"])] if os.environ.get("SHELFBENCH_DATA") else []
    return [*roots, cache_root() / "data"]
