"""The layouts catalogues come in: ImageFolder, CSV/JSONL manifests, WebDataset shards.

A suite declares a dataset in one of them with a few lines and no Python::

    [datasets.my-catalogue]
    format = "csv"              # imagefolder | csv | jsonl | webdataset
    root = "data/catalogue"     # relative to the suite file
    manifest = "items.csv"      # csv/jsonl: relative to root
    label = "category"          # csv/jsonl: the label column (default "label")
    id = "product_id"           # optional: relevance by this column instead of the label
    splits = { train = "train", test = "test" }
    protocol = "split"          # split | leave-one-out | query-gallery
    class_names = "classnames.txt"  # optional, for integer labels: line k names label k
                                    # (relative to the suite file), or an inline list

``splits`` maps each split to a sub-folder (imagefolder), a split-column value or list of
values (csv/jsonl; column ``split``), or shard glob (webdataset). Under query-gallery, the
test items whose split value is ``query`` are the queries. A manifest's optional ``sha256``
column (hex) is checked whenever a file is read; a file that does not match counts as an
unreadable image.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from harness.datasets.base import DATASETS, PROTOCOLS, Dataset, DatasetSpec, fingerprint
from harness.datasets.files import (
    FileSplit,
    TarSplit,
    codes,
    file_split,
    files_fingerprint,
    safe_path,
    tar_members,
)
from harness.errors import DatasetError, DatasetUnavailable
from harness.paths import regular_file
from harness.settings import Name, Table, listed, load, toml

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_SPLITS = {"train": "train", "test": "test"}


def _need(root: Path, name: str) -> None:
    if not root.exists():
        raise DatasetUnavailable(f"dataset {name!r}: {root} does not exist")


def image_folder(name: str, root: Path, splits: Mapping[str, str]) -> Dataset:
    """``root/<split dir>/<class>/<image>``. Labels are the class folder names in sorted
    order, shared by all splits: a class missing from one split keeps its number."""
    _need(root, name)
    found: dict[str, list[tuple[str, str]]] = {}
    for split, sub in splits.items():
        base = root / sub
        if not base.is_dir():
            raise DatasetError(f"dataset {name!r}: no folder {base} for split {split!r}")
        found[split] = [
            (safe_path(root, path.relative_to(root).as_posix(), str(path)), path.parent.name)
            for path in sorted(base.glob("*/*"))
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
    _, classes = codes([label for items in found.values() for _, label in items])
    index = {c: i for i, c in enumerate(classes)}
    built = {
        split: file_split(
            root,
            [p for p, _ in items],
            np.array([index[label] for _, label in items], dtype=np.int64),
        )
        for split, items in found.items()
    }
    return Dataset(name, files_fingerprint(name, built), built, classes)


def read_manifest(path: Path) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV (with a header) or JSONL manifest, as strings, each with its line
    number in the file (for messages). A CSV row with fewer fields than the header, or a
    JSONL line that is not an object, is an error naming its line."""
    regular_file(path, "manifest", DatasetError, DatasetUnavailable)
    try:
        with path.open(newline="") as f:
            if path.suffix == ".jsonl":
                return [
                    (number, _json_row(path, number, line))
                    for number, line in enumerate(f, 1)
                    if line.strip()
                ]
            reader = csv.DictReader(f, restval=None)
            rows = []
            for row in reader:
                if None in row.values() or None in row:
                    raise DatasetError(
                        f"{path} line {reader.line_num}: the row's fields do not match the "
                        f"header's {len(reader.fieldnames or ())} columns"
                    )
                rows.append((reader.line_num, row))
            return rows
    except FileNotFoundError:
        raise DatasetUnavailable(f"manifest {path} does not exist") from None
    except (OSError, ValueError, csv.Error) as exc:
        raise DatasetError(f"manifest {path}: {exc}") from None


def _json_row(path: Path, number: int, line: str) -> dict[str, str]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"{path} line {number}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{path} line {number}: a JSONL row is an object, not {line[:40]!r}")
    return {k: str(v) for k, v in row.items() if v is not None}


def manifest(
    name: str,
    root: Path,
    splits: Mapping[str, str | list[str]],
    manifest_file: str = "manifest.csv",
    label: str = "label",
    path_column: str = "path",
    split_column: str = "split",
    id_column: str | None = None,
) -> Dataset:
    """A CSV/JSONL manifest: ``path,label[,split][,sha256]`` and any extra columns. Paths
    are relative to the manifest's folder and may not leave it. With a ``sha256`` column,
    a file whose bytes do not match is an unreadable image."""
    _need(root, name)
    file = root / manifest_file
    numbered = read_manifest(file)
    if not numbered:
        raise DatasetError(f"{file}: the manifest has no rows")
    lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
    required = (path_column, label) + ((id_column,) if id_column else ())
    hashed = "sha256" in rows[0]
    for line, row in numbered:
        for column in required:
            if not row.get(column):
                raise DatasetError(
                    f"{file} line {line}: no value for {column!r}"
                    + ("" if column in row else f"; the row has {sorted(row)}")
                )
        if hashed and not re.fullmatch(r"[0-9a-fA-F]{64}", row.get("sha256") or ""):
            digest = row.get("sha256")
            raise DatasetError(f"{file} line {line}: sha256 {digest!r} is not 64 hex digits")
    base = file.parent
    _, classes = codes([row[label] for row in rows])
    index = {c: i for i, c in enumerate(classes)}
    all_ids = codes([row[id_column] for row in rows])[0] if id_column else None
    built: dict[str, FileSplit] = {}
    for split, values in splits.items():
        wanted = {values} if isinstance(values, str) else set(values)
        chosen = [
            i
            for i, row in enumerate(rows)
            if (len(splits) == 1 and split_column not in row) or row.get(split_column) in wanted
        ]
        if not chosen:
            raise DatasetError(f"{file}: no rows with {split_column} in {sorted(wanted)}")
        built[split] = file_split(
            base,
            [safe_path(base, rows[i][path_column], f"{file} line {lines[i]}") for i in chosen],
            np.array([index[rows[i][label]] for i in chosen], dtype=np.int64),
            None if all_ids is None else all_ids[chosen],
            np.array([rows[i].get(split_column) == "query" for i in chosen]),
            [rows[i]["sha256"] for i in chosen] if hashed else None,
        )
    return Dataset(name, files_fingerprint(name, built), built, classes)


def webdataset(
    name: str, root: Path, splits: Mapping[str, str], label_key: str = "label"
) -> Dataset:
    """WebDataset tar shards: members grouped by key (name up to the first dot), the image
    in ``jpg``/``jpeg``/``png``/``webp``, the label in ``cls`` (text) or ``json``
    (``label_key``). Items are read by byte range, so shards are never unpacked."""
    _need(root, name)
    found: dict[str, tuple[tuple[Path, ...], list[tuple[str, tuple[int, int, int], str]]]] = {}
    for split, pattern in splits.items():
        shards = tuple(sorted(root.glob(pattern)))
        if not shards:
            raise DatasetError(f"dataset {name!r}: no shards match {root / pattern}")
        items = []
        for key, parts in tar_members(shards).items():
            image = next((parts[e] for e in ("jpg", "jpeg", "png", "webp") if e in parts), None)
            if image is None:
                continue
            items.append((key, image, _tar_label(shards, parts, key, label_key)))
        found[split] = (shards, items)
    _, classes = codes([label for _, items in found.values() for *_, label in items])
    index = {c: i for i, c in enumerate(classes)}
    built: dict[str, TarSplit] = {}
    parts: list[bytes | str] = [name]
    for split, (shards, items) in found.items():
        where = np.array([image for _, image, _ in items], dtype=np.int64).reshape(-1, 3)
        built[split] = TarSplit(
            shards,
            np.array([key for key, _, _ in items], dtype=np.bytes_),
            where[:, 0],
            where[:, 1],
            where[:, 2],
            np.array([index[label] for *_, label in items], dtype=np.int64),
        )
        parts += [split, *(f"{s.name}:{s.stat().st_size}:{s.stat().st_mtime_ns}" for s in shards)]
        parts.append(built[split].labels.astype("<i8").tobytes())
    return Dataset(name, fingerprint(parts), dict(built), classes)


def _tar_label(
    shards: tuple[Path, ...], parts: dict[str, tuple[int, int, int]], key: str, label_key: str
) -> str:
    source = parts.get("cls") or parts.get("json")
    if source is None:
        raise DatasetError(f"{shards[0].parent}: sample {key!r} has no .cls or .json label")
    number, offset, size = source
    with shards[number].open("rb") as f:
        f.seek(offset)
        text = f.read(size).decode().strip()
    if "cls" in parts:
        return text
    try:
        return str(json.loads(text)[label_key])
    except (ValueError, KeyError):
        raise DatasetError(f"sample {key!r}: its .json has no {label_key!r}") from None


FORMATS: dict[str, Callable[..., Dataset]] = {
    "imagefolder": image_folder,
    "csv": manifest,
    "jsonl": manifest,
    "webdataset": webdataset,
}


class DatasetTable(Table):
    """What every ``[datasets.NAME]`` table takes, whatever its format."""

    format: str
    root: Name  # relative to the suite file
    splits: dict[Literal["train", "test"], Name | listed(Name)] = Field(
        default_factory=lambda: dict(DEFAULT_SPLITS)
    )
    protocol: Literal[tuple(PROTOCOLS)] = "split"
    domain: Name = "catalogue"
    class_names: Name | listed(Name) | None = None  # a file, one name per line, or a list


class ImageFolderTable(DatasetTable):
    format: Literal["imagefolder"]


class ManifestTable(DatasetTable):
    format: Literal["csv", "jsonl"]
    manifest: Name | None = None  # relative to root; manifest.csv or manifest.jsonl
    label: Name = "label"
    path: Name = "path"
    id: Name | None = None  # relevance by this column instead of the label
    split_column: Name = "split"


class WebDatasetTable(DatasetTable):
    format: Literal["webdataset"]
    label_key: Name = "label"  # the label's key in a sample's .json


TABLES: dict[str, type[DatasetTable]] = {
    "imagefolder": ImageFolderTable,
    "csv": ManifestTable,
    "jsonl": ManifestTable,
    "webdataset": WebDatasetTable,
}
# Table keys → loader arguments, per format.
KEYS: dict[str, dict[str, str]] = {
    "imagefolder": {},
    "csv": {
        "manifest": "manifest_file",
        "label": "label",
        "path": "path_column",
        "id": "id_column",
        "split_column": "split_column",
    },
    "webdataset": {"label_key": "label_key"},
}
KEYS["jsonl"] = KEYS["csv"]


def user_dataset(name: str, table: Mapping[str, Any], base: Path) -> DatasetSpec:
    """A dataset declared in a suite's ``[datasets.NAME]`` table (see the module doc)."""
    where = f"[datasets.{name}]"
    fmt = table.get("format") if isinstance(table, Mapping) else None
    if fmt not in FORMATS:
        raise DatasetError(
            f"{where} format = {toml(fmt)}: must be one of {', '.join(map(toml, FORMATS))}"
        )
    declared = load(TABLES[fmt], table, where, error=DatasetError)
    splits = dict(declared.splits)
    extra = {
        arg: value
        for key, arg in KEYS[fmt].items()
        if (value := getattr(declared, key)) is not None
    }
    if fmt == "jsonl":
        extra.setdefault("manifest_file", "manifest.jsonl")
    root = (base / declared.root).resolve()
    names = declared.class_names
    if isinstance(names, str):
        names = regular_file((base / names).resolve(), f"{where} class_names", DatasetError)
    return DatasetSpec(
        name=name,
        domain=declared.domain,
        classes=(),
        splits=tuple(splits),
        protocol=declared.protocol,
        open=partial(_open, name, fmt, root, tuple(splits.items()), tuple(extra.items()), names),
        source=f"{fmt} at {root}",
    )


@cache
def _open(
    name: str,
    fmt: str,
    root: Path,
    splits: tuple[Any, ...],
    extra: tuple[Any, ...],
    class_names: Path | tuple[str, ...] | None = None,
) -> Dataset:
    dataset = FORMATS[fmt](name, root, dict(splits), **dict(extra))
    if class_names is None:
        return dataset
    return replace(dataset, classes=named(dataset, class_names))


def named(dataset: Dataset, class_names: Path | tuple[str, ...]) -> tuple[str, ...]:
    """The classes of a dataset whose labels are integers, named: label k by the k-th
    name (``class_names``, a file of one name per line or the names themselves). Every
    line is a name: an empty one, or one that repeats an earlier name, is refused, since
    it would shift or merge the names after it."""
    where = f"dataset {dataset.name!r}: class_names"
    if isinstance(class_names, Path):
        try:
            lines = class_names.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{where} {class_names}: {exc}") from None
        names = tuple(line.strip() for line in lines)
        where = f"{where} {class_names}"
    else:
        names = class_names
    seen: dict[str, int] = {}
    for number, class_name in enumerate(names, 1):
        if not class_name:
            raise DatasetError(
                f"{where} line {number} is empty; every line names one class (label "
                f"{number - 1}): remove the blank line or name the class"
            )
        if class_name in seen:
            raise DatasetError(
                f"{where} line {number} repeats line {seen[class_name]}'s name "
                f"{class_name!r}; two labels would share one name"
            )
        seen[class_name] = number
    if not all(c.lstrip("-").isdigit() for c in dataset.classes):
        raise DatasetError(
            f"{where}: the labels are already names ({', '.join(dataset.classes[:3])}, ...); "
            "class_names names integer labels"
        )
    labels = [int(c) for c in dataset.classes]
    if min(labels) < 0 or max(labels) >= len(names):
        raise DatasetError(
            f"{where} has {len(names)} names, but the labels run from {min(labels)} to "
            f"{max(labels)}; line k names label k"
        )
    return tuple(names[label] for label in labels)


def register_user_dataset(spec: DatasetSpec) -> None:
    """Add a suite's dataset; the same declaration loaded twice is fine, a clash is not."""
    if spec.name in DATASETS.names():
        if DATASETS.get(spec.name) == spec:
            return
        raise DatasetError(f"dataset {spec.name!r} is declared twice, differently")
    DATASETS.add(spec)
