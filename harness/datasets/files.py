"""Datasets of image files: the decoding rule, a numpy-backed index, and its fingerprint.

Every loader (ImageFolder, CSV/JSONL manifests, WebDataset shards, the public datasets'
list files) builds a ``FileSplit``: relative paths in one fixed-width bytes array, labels
and optional ids as integer arrays. DataLoader workers then share a few arrays instead of
a Python object per item, so their memory does not grow with copy-on-access.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from harness.datasets.base import fingerprint
from harness.errors import DatasetError, PathError
from harness.paths import regular_file

# Pillow refuses truncated files by default; keep it so: a truncated image is bad data.
ImageFile.LOAD_TRUNCATED_IMAGES = False
WHITE = (255, 255, 255)


class BadImage(DatasetError):
    """An image that is missing or cannot be decoded; the message names the file."""


def decode(data: bytes | Path, name: str) -> Image.Image:
    """The one decoding rule, for every file-backed dataset:

    1. EXIF orientation is applied (a phone photo stands the way it was shot);
    2. 16-bit and 32-bit grayscale (I;16, I) is scaled to 8 bits by its type's range;
    3. anything with transparency (RGBA, LA, P with transparency) is composited on white,
       as product photos on a white page are;
    4. every other mode (L, 1, P, CMYK, YCbCr, ...) is converted by Pillow to RGB.

    A missing, truncated or undecodable file raises ``BadImage`` naming ``name``.
    """
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(source) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise BadImage(f"{name}: file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImage(f"{name}: cannot decode ({exc})") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        scale = 1 / 256 if image.mode.startswith("I;16") else 1 / 65536 / 256
        array = np.asarray(image, dtype=np.float64) * scale
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def codes(values: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes for string labels, in sorted order (numerically if all are integers),
    and the names in code order: the same mapping however the files are listed."""
    names = sorted(
        set(values), key=lambda v: (0, int(v), v) if v.lstrip("-").isdigit() else (1, 0, v)
    )
    index = {name: i for i, name in enumerate(names)}
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values)), tuple(names)


@dataclass(frozen=True)
class FileSplit:
    """A split of image files under ``root``: paths relative to it, labels, and optional
    relevance ids, query flags and sha256 digests (one row of 32 bytes per file) that each
    file must match when it is read."""

    root: Path
    paths: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    query: np.ndarray | None = None
    sha256: np.ndarray | None = None
    keys: np.ndarray | None = None  # each item's name (a manifest's key column): its path

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        return self.root / self.paths[index].decode()

    def key(self, index: int) -> str:
        """The item's name, by which precomputed vectors find it."""
        return (self.paths if self.keys is None else self.keys)[index].decode()

    def image(self, index: int) -> Image.Image:
        path = self.path(index)
        if path.exists():  # a pipe would block the read forever
            try:
                regular_file(path, "image")
            except PathError as exc:
                raise BadImage(str(exc)) from None
        if self.sha256 is None:
            return decode(path, str(path))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadImage(f"{path}: file not found") from None
        except OSError as exc:
            raise BadImage(f"{path}: cannot read ({exc})") from None
        if hashlib.sha256(data).digest() != self.sha256[index].tobytes():
            raise BadImage(f"{path}: its sha256 differs from the manifest's (changed or damaged)")
        return decode(data, str(path))


@dataclass(frozen=True)
class TarSplit:
    """A split read from WebDataset tar shards: each item is a byte range of a shard."""

    shards: tuple[Path, ...]
    names: np.ndarray
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    query: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def key(self, index: int) -> str:
        """The sample's WebDataset key."""
        return self.names[index].decode()

    def image(self, index: int) -> Image.Image:
        path = self.shards[int(self.shard[index])]
        with path.open("rb") as f:
            f.seek(int(self.offset[index]))
            data = f.read(int(self.size[index]))
        return decode(data, f"{path}:{self.names[index].decode()}")


def safe_path(root: Path, relative: str, where: str) -> str:
    """``relative`` if it stays inside ``root`` once every symlink is resolved; a path that
    escapes it (``..``, absolute, or through a link) is an error."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, relative))
    if Path(relative).is_absolute() or os.path.commonpath([real_root, real]) != real_root:
        raise DatasetError(
            f"{where}: path {relative!r} escapes the dataset root {root} (it resolves to "
            f"{real}); copy the file into the root or drop the row"
        )
    return relative


def file_split(
    root: Path,
    paths: Sequence[str],
    labels: np.ndarray,
    ids: np.ndarray | None = None,
    query: np.ndarray | None = None,
    sha256: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> FileSplit:
    """A ``FileSplit`` of ``paths`` (strings) and, if given, their hex sha256 digests and
    the items' names."""
    encoded = np.array([p.encode() for p in paths], dtype=np.bytes_)
    digests = None
    if sha256 is not None:
        digests = np.frombuffer(bytes.fromhex("".join(sha256)), np.uint8).reshape(-1, 32)
    names = None if keys is None else np.array([k.encode() for k in keys], dtype=np.bytes_)
    return FileSplit(root, encoded, labels, ids, query, digests, names)


def files_fingerprint(name: str, splits: dict[str, FileSplit], content: bool = False) -> str:
    """Fingerprint of a file dataset from its index and each file's size and mtime (a stat
    per file, quick), or from each file's bytes if ``content``. A missing file counts as
    such, so it changes the fingerprint when it appears."""
    parts: list[bytes | str] = [name]
    for split, data in splits.items():
        parts += [split, data.paths.tobytes(), data.labels.astype("<i8").tobytes()]
        for optional in (data.ids, data.query):
            parts.append(b"" if optional is None else optional.astype("<i8").tobytes())
        if data.sha256 is not None:
            parts.append(data.sha256.tobytes())
        if data.keys is not None:
            parts.append(data.keys.tobytes())
        parts.append(_stats(data, content))
    return fingerprint(parts)


def _stats(data: FileSplit, content: bool) -> bytes:
    digest = hashlib.sha256()
    for i in range(len(data)):
        path = data.path(i)
        if content:
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                digest.update(b"missing")
            continue
        try:
            stat = path.stat()
        except OSError:
            digest.update(b"missing")
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.digest()


# WebDataset's own split of a member name (``webdataset.tariterators.base_plus_ext``): the
# key is everything up to the first dot of the file name, directories included.
SAMPLE_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def tar_members(shards: Iterable[Path]) -> dict[str, dict[str, tuple[int, int, int]]]:
    """WebDataset grouping: per sample key (the member's path up to the first dot of its
    file name, so ``./a/0001.jpg`` is key ``./a/0001``), each extension's (shard number,
    data offset, size). Members with no extension are not samples' files."""
    samples: dict[str, dict[str, tuple[int, int, int]]] = {}
    for number, shard in enumerate(shards):
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    match = SAMPLE_NAME.match(member.name)
                    if member.isfile() and match:
                        key, ext = match.groups()
                        samples.setdefault(key, {})[ext.lower()] = (
                            number,
                            member.offset_data,
                            member.size,
                        )
        except (OSError, tarfile.TarError) as exc:
            raise DatasetError(f"{shard}: not a readable tar shard ({exc})") from None
    return samples
