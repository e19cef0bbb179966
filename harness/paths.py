"""Where shelfbench keeps data, downloads and caches (overridable by environment variables)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.errors import PathError, ShelfbenchError


def cache_root() -> Path:
    """``$SHELFBENCH_CACHE``, default ``~/.cache/shelfbench``."""
    return Path(os.environ.get("SHELFBENCH_CACHE", Path.home() / ".cache" / "shelfbench"))


def cache_read_only(root: Path | None = None) -> bool:
    """Whether the cache exists but is not to be written: this user may not write it, or
    its directory has no write permission for anyone (a CI job that restores its cache
    read-only; as root, only the mode tells). Its entries are then served, and nothing
    computed is kept."""
    root = cache_root() if root is None else root
    try:
        mode = root.stat().st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and (not mode & 0o222 or not os.access(root, os.W_OK | os.X_OK))


def may_write(path: Path) -> bool:
    """Whether a cache file may be written at ``path``: its nearest existing folder is not
    read-only (``cache_read_only``)."""
    existing = Path(path).parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return not cache_read_only(existing)


# The folders shelfbench keeps under the cache; each must be one where it exists.
CACHE_FOLDERS = (
    "embeddings", "outcomes", "finetune", "remote", "library-preprocess", "flops", "plots",
    "data",
)  # fmt: skip


def check_cache(root: Path) -> bool:
    """Check the cache before any cell runs: a directory (or one that can be made), whose
    folders are folders; True where it is read-only (``cache_read_only``)."""
    if cache_read_only(root):
        return True
    directory(root, "the cache")
    for name in CACHE_FOLDERS:
        directory(root / name, f"the cache's {name} folder")
    return False


def data_roots() -> list[Path]:
    """Directories searched for datasets, in order: ``$SHELFBENCH_DATA``, then downloads."""
    roots = [Path(os.environ["SHELFBENCH_DATA"])] if os.environ.get("SHELFBENCH_DATA") else []
    return [*roots, cache_root() / "data"]


def _kind(mode: int) -> str:
    """What a file of ``st_mode`` is, in words."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a regular file"


def regular_file(
    path: Path,
    what: str,
    error: type[ShelfbenchError] = PathError,
    missing: type[ShelfbenchError] | None = None,
) -> Path:
    """``path`` if it is an existing regular file (or a link to one); else ``error`` in one
    line saying what it is instead (``missing`` where it does not exist, e.g. a skip). A
    named pipe or a device is refused before anything opens it: a read would block."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise (missing or error)(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is {_kind(mode)}, not a file")
    return Path(path)


def directory(path: Path, what: str) -> Path:
    """``path`` if it is a directory, or does not exist and could be created (what is in
    its way is a directory); it is not created here."""
    path = Path(path)
    existing = path
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        raise PathError(f"{what} {path}: {existing} is a broken link")
    if not existing.is_dir():
        blocker = "it" if existing == path else str(existing)
        raise PathError(
            f"{what} {path} must be a directory, but {blocker} is {_kind(existing.stat().st_mode)}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PathError(f"{what} {path}: {existing} is not writable")
    return path
