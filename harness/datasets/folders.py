"""Catalogues as folders: ImageFolder (``root/<split>/<class>/<image>``, local or behind a
URL) and WebDataset tar shards (local), each item read where it is, never unpacked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harness.datasets.base import Dataset, fingerprint
from harness.datasets.files import (
    TarSplit,
    codes,
    file_split,
    files_fingerprint,
    safe_path,
    tar_members,
)
from harness.datasets.remote import Store, is_url, split_fingerprint, unreachable
from harness.errors import DatasetError, DatasetUnavailable

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _need(root: Path, name: str) -> None:
    if not root.exists():
        raise DatasetUnavailable(f"dataset {name!r}: {root} does not exist")


def image_folder(
    name: str, root: str | Path, splits: Mapping[str, str], store: Store | None = None
) -> Dataset:
    """``root/<split dir>/<class>/<image>``. Labels are the class folder names in sorted
    order, shared by all splits: a class missing from one split keeps its number."""
    if is_url(str(root)):
        return remote_folder(name, str(root), splits, store or Store.of(str(root), None, 30.0))
    root = Path(root)
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
    labelled, classes = by_class(found)
    built = {split: file_split(root, *items) for split, items in labelled.items()}
    return Dataset(name, files_fingerprint(name, built), built, classes)


def by_class(
    found: Mapping[str, list[tuple[str, str]]],
) -> tuple[dict[str, tuple[list[str], np.ndarray]], tuple[str, ...]]:
    """Each split's items (where, class folder) as where they are and label codes, and
    the class names: sorted, shared by all splits."""
    label_codes, classes = codes([label for items in found.values() for _, label in items])
    labelled, start = {}, 0
    for split, items in found.items():
        labelled[split] = ([w for w, _ in items], label_codes[start : start + len(items)])
        start += len(items)
    return labelled, classes


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
        for key, members in tar_members(shards).items():
            image = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
            if image is None:
                continue
            items.append((key, image, _tar_label(shards, members, key, label_key)))
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
    return Dataset(name, fingerprint(parts), built, classes)


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


def remote_folder(name: str, root: str, splits: Mapping[str, str], store: Store) -> Dataset:
    """``image_folder`` behind a URL: the store lists each split's folder."""
    from harness.datasets.manifests import remote_split

    fs = store.fs()
    found: dict[str, list[tuple[str, str]]] = {}
    for split, sub in splits.items():
        base = f"{root.rstrip('/')}/{sub}"
        try:
            listed = sorted(fs.find(base))
        except Exception as exc:  # missing (a skip), or a store that cannot answer (a failure)
            raise unreachable(
                f"dataset {name!r}: the folder {base} of split {split!r}", exc, store.timeout
            ) from None
        urls = [fs.unstrip_protocol(p) if not is_url(p) else p for p in listed]
        found[split] = [
            (url, url.rsplit("/", 2)[-2])
            for url in urls
            if Path(url).suffix.lower() in IMAGE_SUFFIXES and url.count("/") > base.count("/") + 1
        ]
    labelled, classes = by_class(found)
    built = {
        split: remote_split(store, urls, None, None, labels=labels)
        for split, (urls, labels) in labelled.items()
    }
    return Dataset(name, split_fingerprint(name, built), built, classes)
