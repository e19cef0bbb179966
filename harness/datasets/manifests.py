"""Manifest catalogues: a CSV, JSONL or Parquet table of items (``path,label[,split][,id]
[,sha256]``, any other columns; names configurable), where the images are files beside
it, URLs (``harness.datasets.remote``), or bytes in one of its columns (Parquet).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset
from harness.datasets.files import FileSplit, codes, file_split, files_fingerprint, safe_path
from harness.datasets.remote import (
    InlineSplit,
    RemoteSplit,
    Store,
    is_url,
    join,
    split_fingerprint,
    unreachable,
    versions,
)
from harness.errors import DatasetError, DatasetUnavailable
from harness.paths import regular_file

Row = dict[str, Any]


def _open(location: str, store: Store | None) -> Any:
    """A binary file object for a local path or a URL."""
    if is_url(location):
        assert store is not None
        try:
            return store.fs().open(location, "rb")
        except Exception as exc:  # fsspec's backends raise their own
            raise unreachable(f"manifest {location}", exc, store.timeout) from None
    regular_file(Path(location), "manifest", DatasetError, DatasetUnavailable)
    return Path(location).open("rb")


def read_manifest(location: str | Path, store: Store | None = None) -> list[tuple[str, Row]]:
    """Rows of a CSV (with a header), JSONL or Parquet manifest, each with where it is in
    the file (``line N``, ``row N``) for messages; values are strings, but for bytes (a
    Parquet image column). A CSV row with fewer fields than the header, or a JSONL line
    that is not an object, is an error naming its line."""
    location = str(location)
    try:
        with _open(location, store) as raw:
            if location.endswith(".parquet"):
                return _parquet_rows(raw)
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            if location.endswith(".jsonl"):
                return [
                    (f"line {number}", _json_row(location, number, line))
                    for number, line in enumerate(text, 1)
                    if line.strip()
                ]
            return _csv_rows(location, text)
    except (OSError, ValueError, csv.Error) as exc:
        raise DatasetError(f"manifest {location}: {exc}") from None


def _csv_rows(location: str, text: io.TextIOBase) -> list[tuple[str, Row]]:
    reader = csv.DictReader(text, restval=None)
    rows = []
    for row in reader:
        if None in row.values() or None in row:
            raise DatasetError(
                f"{location} line {reader.line_num}: the row's fields do not match the "
                f"header's {len(reader.fieldnames or ())} columns"
            )
        rows.append((f"line {reader.line_num}", row))
    return rows


def _parquet_rows(raw: Any) -> list[tuple[str, Row]]:
    import pyarrow.parquet as pq

    def plain(value: Any) -> Any:
        if isinstance(value, dict) and "bytes" in value:  # Hugging Face's image struct
            return value["bytes"]
        return value if isinstance(value, bytes) else str(value)

    table = pq.read_table(raw).to_pylist()
    return [
        (f"row {n}", {k: plain(v) for k, v in row.items() if v is not None})
        for n, row in enumerate(table, 1)
    ]


def _json_row(path: str, number: int, line: str) -> Row:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"{path} line {number}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{path} line {number}: a JSONL row is an object, not {line[:40]!r}")
    return {k: str(v) for k, v in row.items() if v is not None}


def _check(file: str, numbered: list[tuple[str, Row]], required: tuple[str, ...]) -> bool:
    """Every row has a value in each required column, and a well-formed sha256 if the
    manifest has that column; whether it has."""
    if not numbered:
        raise DatasetError(f"{file}: the manifest has no rows")
    hashed = "sha256" in numbered[0][1]
    for where, row in numbered:
        for column in required:
            if not row.get(column):
                raise DatasetError(
                    f"{file} {where}: no value for {column!r}"
                    + ("" if column in row else f"; the row has {sorted(row)}")
                )
        if hashed and not re.fullmatch(r"[0-9a-fA-F]{64}", str(row.get("sha256") or "")):
            raise DatasetError(f"{file} {where}: sha256 {row.get('sha256')!r} is not 64 hex digits")
    return hashed


@dataclass(frozen=True)
class Columns:
    """Where a manifest keeps what: each item's image (``path``, or bytes in ``image``),
    label, split, relevance id and key (default: its path)."""

    label: str = "label"
    path: str = "path"
    split: str = "split"
    id: str | None = None
    image: str | None = None
    key: str | None = None


def manifest(
    name: str,
    root: str | Path,
    splits: Mapping[str, str | list[str]],
    manifest_file: str = "manifest.csv",
    columns: Columns = Columns(),
    store: Store | None = None,
) -> Dataset:
    """A manifest's splits. Paths are relative to the manifest's folder (local or a URL)
    and may not leave it; a path may be an absolute URL; with ``columns.image`` the
    images are that column's bytes. With a ``sha256`` column, an image whose bytes do not
    match is unreadable."""
    root = str(root)
    if is_url(manifest_file) or is_url(root):
        file = join(root, manifest_file, name)
    elif not Path(root).exists():
        raise DatasetUnavailable(f"dataset {name!r}: {root} does not exist")
    else:
        file = str(Path(root) / manifest_file)
    numbered = read_manifest(file, store)
    source = columns.image or columns.path
    required = (source, columns.label, *(c for c in (columns.id, columns.key) if c))
    hashed = _check(file, numbered, required)
    rows = [row for _, row in numbered]
    label_codes, classes = codes([str(row[columns.label]) for row in rows])
    all_ids = codes([str(row[columns.id]) for row in rows])[0] if columns.id else None
    built: dict[str, Any] = {}
    for split, values in splits.items():
        wanted = {values} if isinstance(values, str) else set(values)
        chosen = [
            i
            for i, row in enumerate(rows)
            if (len(splits) == 1 and columns.split not in row) or row.get(columns.split) in wanted
        ]
        if not chosen:
            raise DatasetError(f"{file}: no rows with {columns.split} in {sorted(wanted)}")
        common = {
            "labels": label_codes[chosen],
            "ids": None if all_ids is None else all_ids[chosen],
            "query": np.array([rows[i].get(columns.split) == "query" for i in chosen]),
        }
        built[split] = _split(file, numbered, chosen, columns, hashed, store, common)
    local = [isinstance(s, FileSplit) for s in built.values()]
    if any(local) and not all(local):
        raise DatasetError(f"{file}: a manifest's images are all local files or all URLs")
    fingerprint_of = files_fingerprint if all(local) else split_fingerprint
    return Dataset(name, fingerprint_of(name, built), built, classes)


def _split(
    file: str,
    numbered: list[tuple[str, Row]],
    chosen: list[int],
    columns: Columns,
    hashed: bool,
    store: Store | None,
    common: dict[str, Any],
) -> Any:
    """One split's items: inline bytes, URLs, or files beside the manifest."""
    rows = [numbered[i][1] for i in chosen]
    where = [f"{file} {numbered[i][0]}" for i in chosen]
    keys = [str(row[columns.key]) for row in rows] if columns.key else None
    if columns.image:
        for at, row in zip(where, rows, strict=True):
            if not isinstance(row[columns.image], bytes):
                raise DatasetError(
                    f"{at}: column {columns.image!r} holds {type(row[columns.image]).__name__}, "
                    "not image bytes; an image column is binary (file paths go in the path "
                    "column)"
                )
        images = np.empty(len(rows), dtype=object)
        images[:] = [row[columns.image] for row in rows]
        names = np.array(keys or where, dtype=np.bytes_)
        return InlineSplit(images, names, **common)
    base = file.rsplit("/", 1)[0] if is_url(file) else str(Path(file).parent)
    paths = [str(row[columns.path]) for row in rows]
    digests = [str(row["sha256"]) for row in rows] if hashed else None
    if is_url(base) or any(is_url(p) for p in paths):
        urls = [join(base, p, w) for p, w in zip(paths, where, strict=True)]
        if not all(is_url(u) for u in urls):
            raise DatasetError(f"{file}: a split mixes URLs and local paths")
        return remote_split(store or Store.of(urls[0], None, 30.0), urls, digests, keys, **common)
    places = [safe_path(Path(base), p, w) for p, w in zip(paths, where, strict=True)]
    return file_split(
        Path(base), places, common["labels"], common["ids"], common["query"], digests, keys
    )


def remote_split(
    store: Store,
    urls: list[str],
    digests: list[str] | None,
    keys: list[str] | None,
    **common: Any,
) -> RemoteSplit:
    sha = None
    if digests is not None:
        sha = np.frombuffer(bytes.fromhex("".join(digests)), np.uint8).reshape(-1, 32)
    return RemoteSplit(
        store,
        np.array(urls, dtype=np.bytes_),
        np.array(versions(store, urls), dtype=np.bytes_),
        sha256=sha,
        keys=None if keys is None else np.array(keys, dtype=np.bytes_),
        **common,
    )
