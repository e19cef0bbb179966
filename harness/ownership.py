"""Never write over what is not ours: each file shelfbench writes has a signature, and a
path that already holds something without it is refused, in one line, before any work.

Reports (``latest.*`` and ``runs/`` in the reports directory), a baseline written by
``--shelf-update-baseline``, an ``export --out`` directory and a milvus-lite store are
each checked here.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from harness.errors import PathError
from harness.paths import directory, regular_file

HTML_TITLE = "<title>shelfbench</title>"
MARKDOWN_TITLE = "# shelfbench results"
CSV_HEADER = "id,dataset,backbone,strategy,outcome"
EXPORT_META = "meta.json"


def _head(path: Path, size: int = 512) -> str:
    with path.open("rb") as f:
        return f.read(size).decode("utf-8", errors="replace")


def is_run(path: Path) -> bool:
    """A shelfbench run's JSON: an object with a ``schema`` and a list of ``cells``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "schema" in data and isinstance(data.get("cells"), list)


def is_items(path: Path) -> bool:
    """A run's per-item arrays: an ``.npz`` whose arrays are named ``CELL|NAME``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return all("|" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


SIGNATURES: dict[str, Callable[[Path], bool]] = {
    "latest.json": is_run,
    "latest.items.npz": is_items,
    "latest.md": lambda p: _head(p).startswith(MARKDOWN_TITLE),
    "latest.csv": lambda p: _head(p).startswith(CSV_HEADER),
    "latest.html": lambda p: HTML_TITLE in _head(p),
}


def _refuse(path: Path, what: str, rule: str) -> PathError:
    return PathError(f"{what} {path} holds something shelfbench did not write; {rule}")


def check_reports_dir(reports: Path, what: str = "reports directory") -> Path:
    """``reports`` if shelfbench may write its reports there: a directory (or creatable)
    whose ``latest.*`` files, where they exist, are shelfbench's, and whose ``runs`` is a
    directory."""
    directory(reports, what)
    for name, signature in SIGNATURES.items():
        path = reports / name
        if path.exists() or path.is_symlink():
            regular_file(path, f"{what} file")
            if not signature(path):
                raise _refuse(path, what, "move it, or give --shelf-reports another directory")
    directory(reports / "runs", f"{what}'s runs folder")
    return reports


def check_run_target(target: Path, what: str = "--shelf-baseline") -> Path:
    """``target`` if a run may be written there: nothing yet, or a run (and its items)
    shelfbench wrote."""
    from harness.baseline import items_path

    directory(target.parent, f"{what}'s folder")
    rule = "a baseline is written only to a new path or over a run shelfbench wrote"
    for path, signature in ((target, is_run), (items_path(target), is_items)):
        if path.exists() or path.is_symlink():
            regular_file(path, what)
            if not signature(path):
                raise _refuse(path, what, rule)
    return target


def check_export_dir(out: Path) -> Path:
    """``out`` if an export may be written there: nothing yet, an empty directory, or an
    earlier export (its ``meta.json`` names a cell)."""
    directory(out, "export --out")
    if out.is_dir() and any(out.iterdir()):
        meta = out / EXPORT_META
        try:
            ours = "cell" in json.loads(meta.read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise _refuse(out, "export --out", "give an empty or new directory")
    return out


def check_milvus_store(uri: str, where: str) -> None:
    """A local milvus-lite ``uri`` (a path, not a server's URL) must be new or an existing
    store, which milvus-lite keeps as a directory: never a user's file."""
    if not uri or "://" in uri:
        return
    path = Path(uri)
    store = path.is_dir() and ((path / "collections").is_dir() or not any(path.iterdir()))
    if (path.exists() or path.is_symlink()) and not store:
        raise _refuse(
            path, where, "milvus-lite keeps its store in a directory of that name: give a new path"
        )
    directory(path.parent, f"{where}'s folder")


def check_vectors_target(out: Path) -> Path:
    """``out`` if a vectors table may be written there: a new file, or a table shelfbench
    exported before."""
    from harness.vectors import is_ours

    directory(out.parent, "export --out's folder")
    if out.exists() or out.is_symlink():
        regular_file(out, "export --out")
        if not is_ours(out):
            raise _refuse(out, "export --out", "give a new path for the table")
    return out
