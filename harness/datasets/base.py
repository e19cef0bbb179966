"""The dataset layer's vocabulary: a spec (declarative entry), splits of images, the registry."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
from PIL import Image

from harness.errors import DatasetError
from harness.registry import Registry

ProtocolName = Literal["split", "leave-one-out", "query-gallery"]
PROTOCOLS: dict[str, str] = dict(
    zip(
        get_args(ProtocolName),
        (
            "queries are the test split, the gallery is the train split",
            "every test item queries all other test items",
            "test items marked as queries query the other test items, the gallery",
        ),
        strict=True,
    )
)


def gallery_split(protocol: str) -> str:
    """The split whose items a query's neighbours are, under ``protocol``."""
    return "train" if protocol == "split" else "test"


class Split(Protocol):
    """One split: integer labels and an image per index. ``ids``: the relevance key of
    each item (a product or instance id) where it is not the label; ``query``: which items
    are queries (the query-gallery protocol)."""

    @property
    def labels(self) -> np.ndarray: ...

    @property
    def ids(self) -> np.ndarray | None: ...

    @property
    def query(self) -> np.ndarray | None: ...

    def __len__(self) -> int: ...

    def image(self, index: int) -> Image.Image:
        """The item as an RGB PIL image."""
        ...


@dataclass(frozen=True)
class Dataset:
    """An opened dataset: its splits and the fingerprint of exactly this content."""

    name: str
    fingerprint: str
    splits: Mapping[str, Split]
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, split in self.splits.items():
            if len(split) == 0:
                raise DatasetError(
                    f"dataset {self.name!r}: split {name!r} is empty; check that its "
                    "folder, shards or manifest rows hold images"
                )
        where = f"dataset {self.name!r}"
        canonical = {
            name: coded(split, f"{where} split {name!r}") for name, split in self.splits.items()
        }
        object.__setattr__(self, "splits", canonical)

    def split(self, name: str) -> Split:
        try:
            return self.splits[name]
        except KeyError:
            raise DatasetError(
                f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}"
            ) from None


def codes_of(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as int64 codes, the one dtype every layer after the datasets reads
    labels and relevance ids in (uint8 labels once turned "not found", -1, into 255);
    one line where they are not non-negative integers."""
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise DatasetError(
            f"{what} are {array.dtype}, not integer codes; number the classes 0..C-1 "
            "(harness.datasets.files.codes does that for names)"
        )
    if array.size and int(array.min()) < 0:
        raise DatasetError(f"{what} hold {int(array.min())}; codes are 0 or more")
    return array.astype(np.int64, copy=False)


def coded(split: Split, where: str) -> Split:
    """``split`` with its labels and ids as int64 codes (``codes_of``): converted once,
    here, where a dataset is opened. A split that is not a dataclass must hand int64 codes
    itself."""
    labels = codes_of(split.labels, f"{where}: labels")
    ids = None if split.ids is None else codes_of(split.ids, f"{where}: ids")
    if labels is split.labels and ids is split.ids:
        return split
    if not dataclasses.is_dataclass(split):
        raise DatasetError(f"{where}: labels and ids must be int64 codes, not {split.labels.dtype}")
    return dataclasses.replace(split, labels=labels, ids=ids)


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: what the dataset is, and how to open it. ``classes`` may be empty
    where only the files say (they are then the opened ``Dataset``'s)."""

    name: str
    domain: str
    classes: tuple[str, ...]
    splits: tuple[str, ...]
    protocol: str
    open: Callable[[], Dataset] = field(repr=False, compare=False)
    source: str = ""
    fetch: Callable[[Path], Path] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"{self.name}: unknown retrieval protocol {self.protocol!r}")


DATASETS: Registry[DatasetSpec] = Registry("dataset", DatasetError)


@dataclass(frozen=True)
class ArraySplit:
    """A split held in memory as uint8 arrays: (N, H, W) grayscale or (N, H, W, 3) RGB."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    query: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels")
        shape = self.images.shape
        if self.images.dtype != np.uint8 or not (len(shape) == 3 or shape[3:] == (3,)):
            raise DatasetError(
                f"in-memory images must be uint8 (N, H, W) or (N, H, W, 3); got "
                f"{self.images.dtype} {shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return to_rgb(Image.fromarray(self.images[index]))


def to_rgb(image: Image.Image) -> Image.Image:
    """The one conversion rule: every mode (L, P, RGBA, ...) becomes 8-bit RGB."""
    return image if image.mode == "RGB" else image.convert("RGB")


def fingerprint(parts: Sequence[bytes | str]) -> str:
    """sha256 over length-prefixed parts, so different part boundaries never collide."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def subset(n_items: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform sample of ``n`` items (all items if ``n`` is None)."""
    if n is None or n >= n_items:
        return np.arange(n_items)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_items, size=n, replace=False))
