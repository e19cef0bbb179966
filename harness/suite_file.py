"""Reading a suite file: its TOML tables, with the files its ``[suite] include`` names
merged under them, and paths relative to the file that declares them made absolute."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from harness.errors import SuiteError
from harness.paths import regular_file
from harness.settings import Count, Name, Names, Table, load

# The tables a suite file (and a file it includes) may hold.
TABLES = {
    "suite",
    "profile",
    "gate",
    "cells",
    "strategy",
    "floors",
    "datasets",
    "backbones",
    "upgrade",
}


class SuiteMeta(Table):
    """``[suite]``: the suite's name (default: the file's stem), protocol version, and the
    files it extends (``include``, relative to it: their tables are merged under this
    file's, key by key, and their ``[[cells]]`` come first)."""

    name: Name | None = None
    version: Count = 1
    include: Names | None = None


def read_toml(path: Path) -> dict[str, Any]:
    """A suite file's tables; one line if it is not a readable TOML file."""
    regular_file(Path(path), "suite file", SuiteError)
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SuiteError(f"{path}: {exc}") from None


# Keys whose values are paths relative to the file that declares them: (table, key).
PATH_KEYS = (
    ("datasets", "root"),
    ("datasets", "class_names"),
    ("backbones", "weights"),
    ("backbones", "vectors"),
)


def _absolute(raw: dict[str, Any], base: Path) -> None:
    """Make a file's own relative paths absolute (URLs and "random" stay), so that a
    table an including suite takes keeps pointing where its own file meant."""
    for table, key in PATH_KEYS:
        for entry in raw.get(table, {}).values() if isinstance(raw.get(table), dict) else ():
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and value != "random" and "://" not in value:
                entry[key] = str((base / value).resolve())


def missing_paths(path: Path) -> list[str]:
    """One line per local path a suite file's tables name (``PATH_KEYS``) that does not
    exist: a dataset root, class names, weights or vectors."""
    raw = read_suite(path)
    lines = []
    for table, key in PATH_KEYS:
        for name, entry in (raw.get(table) or {}).items():
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and Path(value).is_absolute() and not Path(value).exists():
                lines.append(f"[{table}.{name}] {key} {value} does not exist")
    return lines


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, table by table and key by key (``top`` wins); ``[[cells]]``
    groups add up, the included file's first."""
    out = dict(base)
    for key, value in top.items():
        if key == "cells" and isinstance(value, list) and isinstance(base.get(key), list):
            out[key] = [*base[key], *value]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge(base[key], value)
        else:
            out[key] = value
    return out


def read_suite(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A suite file's tables with those of the files its ``[suite] include`` names
    (relative to it) merged under them; an include cycle is one line."""
    path = Path(path).resolve()
    raw = read_toml(path)
    _absolute(raw, path.parent)
    meta = raw.get("suite", {})
    includes = meta.get("include", []) if isinstance(meta, dict) else []
    load(SuiteMeta, meta if isinstance(meta, dict) else {}, f"{path}: [suite]")
    merged: dict[str, Any] = {}
    for name in includes:
        included = (path.parent / name).resolve()
        if included in (*chain, path):
            loop = " → ".join(p.name for p in (*chain, path, included))
            raise SuiteError(f"{path}: [suite] include = {name!r} makes a cycle: {loop}")
        tables = read_suite(included, (*chain, path))
        if unknown := sorted(set(tables) - TABLES):
            raise SuiteError(
                f"{path}: [suite] include = {name!r}: {included} is not a suite's tables "
                f"(it has [{unknown[0]}]; a suite has {sorted(TABLES)})"
            )
        tables.pop("suite", None)  # the including file's name and version are its own
        merged = merge(merged, tables)
    return merge(merged, raw)
