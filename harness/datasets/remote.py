"""Catalogues where they live: images behind a URL that fsspec understands (``s3://``,
``gs://``, ``https://``, ``file://``), and images held as bytes in a Parquet column.

A remote item is fetched where the images are decoded (the loader's workers), kept in
``$SHELFBENCH_CACHE/remote/`` under its URL and version (the object's ETag, else its size
and modification time), and reported as an unreadable image, with why, when it is
missing, denied or too slow. The dataset's fingerprint holds every item's version, so a
changed object re-embeds.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from harness.cache import digest, keep
from harness.datasets.base import fingerprint
from harness.datasets.files import BadImage, decode
from harness.errors import DatasetError, DatasetUnavailable
from harness.paths import cache_root


def is_url(text: str) -> bool:
    return "://" in text


@dataclass(frozen=True)
class Store:
    """An fsspec filesystem by protocol and options (picklable: each worker makes its own)
    and the seconds one fetch may take."""

    protocol: str
    options: tuple[tuple[str, Any], ...] = ()
    timeout: float = 30.0

    @classmethod
    def of(cls, url: str, options: dict[str, Any] | None, timeout: float) -> Store:
        return cls(url.partition("://")[0], tuple(sorted((options or {}).items())), timeout)

    def fs(self) -> Any:
        import fsspec

        options = dict(self.options)
        if self.protocol in ("http", "https"):
            import aiohttp

            options.setdefault("client_kwargs", {"timeout": aiohttp.ClientTimeout(self.timeout)})
        elif self.protocol in ("s3", "s3a"):
            limits = {"connect_timeout": self.timeout, "read_timeout": self.timeout}
            options.setdefault("config_kwargs", {**limits, "retries": {"max_attempts": 2}})
        return fsspec.filesystem(self.protocol, **options)


def join(base: str, relative: str, where: str) -> str:
    """``relative`` (a manifest's path) under the URL ``base``; one that leaves it is an
    error, as for local manifests. An absolute URL is taken as it is."""
    if is_url(relative):
        return relative
    normal = posixpath.normpath(relative)
    if normal.startswith("../") or normal == ".." or normal.startswith("/"):
        raise DatasetError(f"{where}: path {relative!r} leaves the dataset root {base}")
    return f"{base.rstrip('/')}/{normal}"


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "crc32c"):
        if info.get(key):
            return f"{key}:{str(info[key]).strip(chr(34))}"
    stamp = info.get("LastModified") or info.get("mtime") or info.get("last_modified") or ""
    return f"size:{info.get('size')}:{stamp}"


def versions(store: Store, urls: list[str]) -> list[str]:
    """Each URL's version: one listing per folder (an object store's listing carries
    ETags), each URL it does not answer for asked on its own (``info``); a missing object
    gets an empty version (it counts as unreadable when read)."""
    fs = store.fs()
    by_folder: dict[str, list[int]] = defaultdict(list)
    for i, url in enumerate(urls):
        by_folder[url.rsplit("/", 1)[0]].append(i)
    found: dict[str, str] = {}
    for folder in by_folder:
        try:
            fs.invalidate_cache(folder)  # what the store holds now, not a listing kept
            listed = fs.ls(folder, detail=True)
        except Exception:  # a server without listings (plain HTTP): ask per object
            continue
        for info in listed:
            name = str(info.get("name", ""))
            found[name if is_url(name) else fs.unstrip_protocol(name)] = _version(info)
    out = []
    for url in urls:
        version = found.get(url)
        if version is None:
            try:
                version = _version(fs.info(url))
            except FileNotFoundError:  # or denied, or slow: read as unreadable, saying why
                version = ""
            except Exception as exc:  # a store that cannot be reached at all
                raise unreachable(url, exc, store.timeout) from None
        out.append(version)
    return out


def fetch(store: Store, url: str, version: str) -> bytes:
    """The object's bytes, from the local copy kept under its URL and version, else
    fetched (and kept); why it cannot be had is a ``BadImage``."""
    path = cache_root() / "remote" / digest({"url": url, "version": version})
    try:
        return path.read_bytes()
    except OSError:
        pass
    try:
        data = store.fs().cat_file(url)
    except PermissionError as exc:
        raise BadImage(f"{url}: access denied ({exc})") from None
    except Exception as exc:  # fsspec's backends raise their own (HTTP status, timeouts)
        why = "not found" if not_there(exc) else reason(exc, store.timeout)
        raise BadImage(f"{url}: {why}") from None
    keep(path, lambda p: p.write_bytes(data))
    return data


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (fsspec's HTTP backend wraps every failure, a refused
    connection or an HTTP 500 too, in a FileNotFoundError)."""
    out = [exc]
    while (cause := out[-1].__cause__) is not None and len(out) < 10:
        out.append(cause)
    return out


def _status(exc: BaseException) -> str | None:
    """An HTTP status (aiohttp, fsspec) or an object store's error code (botocore)."""
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    response = getattr(exc, "response", None)
    if status is None and isinstance(response, dict):
        status = response.get("Error", {}).get("Code")
    return None if status is None else str(status)


# What a store says when the object definitely is not there.
NOT_THERE = {"404", "410", "NoSuchKey", "NotFound"}


def not_there(exc: BaseException) -> bool:
    """Whether ``exc`` says the object is not there (HTTP 404 or 410, NoSuchKey, a plain
    FileNotFoundError), not that the store could not be asked (a refused connection, a
    timeout, a server error)."""
    for link in _chain(exc):
        if (status := _status(link)) is not None:
            return status in NOT_THERE
        if link is not exc and not isinstance(link, FileNotFoundError):
            return False
    return isinstance(exc, FileNotFoundError)


def reason(exc: BaseException, timeout: float) -> str:
    """Why the store could not answer, in a few words: the HTTP status or store code,
    the timeout that passed, or the refused connection."""
    links = _chain(exc)
    for link in links:
        if (status := _status(link)) is None:
            continue
        said = f"HTTP {status}" if status.isdigit() else status
        if status in ("401", "403", "AccessDenied"):
            return f"access denied ({said})"
        return f"the store answered {said}"
    for link in links:
        if isinstance(link, TimeoutError) or "Timeout" in type(link).__name__:
            return f"no answer within {timeout:g} s (the dataset's timeout)"
        if isinstance(link, ConnectionRefusedError):
            return "the connection was refused (is the server running?)"
    root = links[-1]
    return f"{type(root).__name__}: {' '.join(str(root).split())[:200]}"


def unreachable(what: str, exc: BaseException, timeout: float) -> DatasetError:
    """The error for ``what`` (a manifest, an image) that a store did not serve: missing
    (a skip where the run allows it) only when the store said so; else a failure."""
    if not_there(exc):
        return DatasetUnavailable(f"{what} does not exist")
    return DatasetError(f"{what}: {reason(exc, timeout)}")


@dataclass(frozen=True)
class RemoteSplit:
    """A split of images behind URLs, each with its version (see ``versions``)."""

    store: Store
    urls: np.ndarray
    versions: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    query: np.ndarray | None = None
    sha256: np.ndarray | None = None
    keys: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        return self.urls[index].decode()

    def key(self, index: int) -> str:
        return self.path(index) if self.keys is None else self.keys[index].decode()

    def image(self, index: int) -> Image.Image:
        url = self.path(index)
        data = fetch(self.store, url, self.versions[index].decode())
        if (
            self.sha256 is not None
            and hashlib.sha256(data).digest() != self.sha256[index].tobytes()
        ):
            raise BadImage(f"{url}: its sha256 differs from the manifest's (changed or damaged)")
        return decode(data, url)


@dataclass(frozen=True)
class InlineSplit:
    """A split whose images are bytes in a table's column (Parquet ``image``)."""

    images: np.ndarray  # of bytes objects
    names: np.ndarray  # each item's key, for messages and vectors
    labels: np.ndarray
    ids: np.ndarray | None = None
    query: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        return self.names[index].decode()

    def key(self, index: int) -> str:
        return self.path(index)

    def image(self, index: int) -> Image.Image:
        return decode(bytes(self.images[index]), self.path(index))


def split_fingerprint(name: str, splits: dict[str, Any]) -> str:
    """The fingerprint of remote and inline splits: their items, labels, relevance and
    query flags, and each item's version (a remote object's) or content (inline bytes)."""
    parts: list[bytes | str] = [name]
    for split, data in splits.items():
        parts += [split, data.labels.astype("<i8").tobytes()]
        for optional in (data.ids, data.query):
            parts.append(b"" if optional is None else optional.astype("<i8").tobytes())
        if isinstance(data, RemoteSplit):
            parts += [data.urls.tobytes(), data.versions.tobytes()]
            parts.append(b"" if data.sha256 is None else data.sha256.tobytes())
        else:
            parts.append(b"".join(hashlib.sha256(bytes(b)).digest() for b in data.images))
    return fingerprint(parts)
