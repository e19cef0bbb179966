"""A catalogue declared in a suite file, with no Python: its layout (``format``), where it
is (``root``: a folder beside the suite, or a URL fsspec understands), and how its
columns or folders name labels, splits and relevance::

    [datasets.my-catalogue]
    format = "parquet"          # imagefolder | csv | jsonl | parquet | webdataset
    root = "s3://shop/catalogue"  # relative to the suite file, or a URL
    manifest = "items.parquet"  # csv/jsonl/parquet: relative to root, or a URL
    label = "category"          # the label column (default "label")
    id = "product_id"           # optional: relevance by this column instead of the label
    key = "image_id"            # optional: each item's name (default: its path)
    image = "image"             # parquet: images as bytes in this column, not files
    splits = { train = "train", test = "test" }
    protocol = "split"          # split | leave-one-out | query-gallery
    class_names = "classnames.txt"  # optional, for integer labels: line k names label k
    storage_options = { endpoint_url = "http://127.0.0.1:9000" }  # fsspec's, for a URL
    timeout = 30                # seconds one remote image may take

``splits`` maps each split to a sub-folder (imagefolder), a split-column value or list of
values (manifests; column ``split``), or shard glob (webdataset). Under query-gallery, the
test items whose split value is ``query`` are the queries. A manifest's optional ``sha256``
column (hex) is checked whenever an image is read; one that does not match counts as an
unreadable image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.datasets.base import DATASETS, Dataset, DatasetSpec, ProtocolName
from harness.datasets.folders import image_folder, webdataset
from harness.datasets.manifests import Columns, manifest
from harness.datasets.remote import Store, is_url
from harness.errors import DatasetError
from harness.paths import regular_file
from harness.settings import Name, Names, Positive, Table, load, toml

SplitName = Literal["train", "test"]
DEFAULT_SPLITS: dict[SplitName, str | tuple[str, ...]] = {"train": "train", "test": "test"}
Scalar = str | int | float | bool


class DatasetTable(Table):
    """What every ``[datasets.NAME]`` table takes, whatever its format: ``root`` (relative
    to the suite file, or a URL: s3://, gs://, https://, file://), each split's folder,
    manifest value or shard glob, the retrieval protocol, ``class_names`` (a file, one
    name per line, or a list), and for a URL fsspec's ``storage_options`` and the seconds
    one remote image may take."""

    format: str
    root: Name  # relative to the suite file, or a URL (s3://, gs://, https://, file://)
    splits: dict[SplitName, Name | Names] = Field(default_factory=lambda: dict(DEFAULT_SPLITS))
    protocol: ProtocolName = "split"
    domain: Name = "catalogue"
    class_names: Name | Names | None = None  # a file, one name per line, or a list
    storage_options: dict[str, Scalar] | None = None  # fsspec's, e.g. endpoint_url
    timeout: Positive = 30.0  # seconds one remote image may take


class ImageFolderTable(DatasetTable):
    """``root/<split>/<class>/<image>``: labels are the class folder names."""

    format: Literal["imagefolder"]


class ManifestTable(DatasetTable):
    """A CSV, JSONL or Parquet manifest (``manifest``: relative to root, or a URL; default
    ``manifest.<format>``), a row per image: its ``path`` (relative to the manifest),
    ``label``, and optionally ``split_column``, ``id`` (relevance by this column instead of
    the label), ``key`` (each item's name, which precomputed vectors find it by), ``image``
    (Parquet: the image's bytes) and ``sha256``."""

    format: Literal["csv", "jsonl", "parquet"]
    manifest: Name | None = None  # relative to root, or a URL; default manifest.<format>
    label: Name = "label"
    path: Name = "path"
    id: Name | None = None  # relevance by this column instead of the label
    split_column: Name = "split"
    key: Name | None = None  # each item's name (precomputed vectors find it by it)
    image: Name | None = None  # parquet: the images as bytes in this column


class WebDatasetTable(DatasetTable):
    """WebDataset tar shards: each sample's image and its ``.cls`` label, or the
    ``label_key`` of its ``.json``."""

    format: Literal["webdataset"]
    label_key: Name = "label"  # the label's key in a sample's .json


TABLES: dict[str, type[DatasetTable]] = {
    "imagefolder": ImageFolderTable,
    "csv": ManifestTable,
    "jsonl": ManifestTable,
    "parquet": ManifestTable,
    "webdataset": WebDatasetTable,
}


def loader(declared: DatasetTable, name: str, root: str) -> Callable[[], Dataset]:
    """What opens the declared dataset (read once per process)."""
    splits = tuple(declared.splits.items())
    store = None
    manifest = getattr(declared, "manifest", None) or ""
    if is_url(root) or is_url(manifest):
        where = root if is_url(root) else manifest
        store = Store.of(where, declared.storage_options, declared.timeout)
    if isinstance(declared, ManifestTable):
        if declared.image and declared.format != "parquet":
            raise DatasetError(f"[datasets.{name}] image: only a parquet manifest holds images")
        columns = Columns(
            declared.label, declared.path, declared.split_column, declared.id,
            declared.image, declared.key,
        )  # fmt: skip
        file = declared.manifest or f"manifest.{declared.format}"
        return partial(_manifest, name, root, splits, file, columns, store)
    if isinstance(declared, WebDatasetTable):
        if is_url(root):
            raise DatasetError(
                f"[datasets.{name}] root = {root!r}: WebDataset shards are read by byte range "
                "from local files; copy them here, or list the images in a manifest"
            )
        return partial(_webdataset, name, root, splits, declared.label_key)
    return partial(_image_folder, name, root, splits, store)


@cache
def _manifest(
    name: str, root: str, splits: tuple, file: str, columns: Columns, store: Any
) -> Dataset:
    return manifest(name, root, dict(splits), file, columns, store)


@cache
def _webdataset(name: str, root: str, splits: tuple, label_key: str) -> Dataset:
    return webdataset(name, Path(root), dict(splits), label_key)


@cache
def _image_folder(name: str, root: str, splits: tuple, store: Any) -> Dataset:
    return image_folder(name, root, dict(splits), store)


def user_dataset(name: str, table: Mapping[str, Any], base: Path) -> DatasetSpec:
    """A dataset declared in a suite's ``[datasets.NAME]`` table (see the module doc)."""
    where = f"[datasets.{name}]"
    fmt = table.get("format") if isinstance(table, Mapping) else None
    if fmt not in TABLES:
        raise DatasetError(
            f"{where} format = {toml(fmt)}: must be one of {', '.join(map(toml, TABLES))}"
        )
    declared = load(TABLES[fmt], table, where, error=DatasetError)
    root = declared.root if is_url(declared.root) else str((base / declared.root).resolve())
    listed = declared.class_names
    names = (
        regular_file((base / listed).resolve(), f"{where} class_names", DatasetError)
        if isinstance(listed, str)
        else listed
    )
    return DatasetSpec(
        name=name,
        domain=declared.domain,
        classes=(),
        splits=tuple(declared.splits),
        protocol=declared.protocol,
        open=partial(_named, loader(declared, name, root), names),
        source=f"{fmt} at {root}",
    )


def _named(open_: Callable[[], Dataset], class_names: Path | tuple[str, ...] | None) -> Dataset:
    dataset = open_()
    return dataset if class_names is None else replace(dataset, classes=named(dataset, class_names))


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
