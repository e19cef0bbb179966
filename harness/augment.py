"""Training batches: the light augmentation of ImageNet fine-tuning (a random resized
crop and a flip), drawn per item and epoch from seeds, so that batches hold the same pixels
whatever the order, the batch or the number of loader workers; files are augmented by
PIL in the loader, in-memory images by per-image resize weights on the device."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image

from harness import resize
from harness.backbones.base import Preprocess
from harness.datasets.base import ArraySplit, Split
from harness.extract import RESAMPLE, Items, Loaded, chunks, in_memory, loader, transform_item


def crop(
    width: int, height: int, rng: np.random.Generator, scale: Any
) -> tuple[tuple[int, int, int, int], bool]:
    """A random resized crop's box (area ``scale``, aspect 3/4-4/3; the whole image after
    ten misses) and whether to flip it: the light augmentation of ImageNet fine-tuning."""
    box = (0, 0, width, height)
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            left = int(rng.integers(0, width - cw + 1))
            top = int(rng.integers(0, height - ch + 1))
            box = (left, top, left + cw, top + ch)
            break
    return box, bool(rng.random() < 0.5)


def augment(
    image: Image.Image, pre: Preprocess, rng: np.random.Generator, scale: Any
) -> np.ndarray:
    """``crop``'s box resized to ``pre.size``, flipped if it says so."""
    box, flip = crop(*image.size, rng, scale)
    out = image.resize((pre.size, pre.size), RESAMPLE[pre.interpolation], box=box)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def item_rng(seed: int, epoch: int, item: int) -> np.random.Generator:
    """The random draws of one item's augmentation in one epoch: the same whatever the
    batch, the order or the number of loader workers."""
    return np.random.default_rng([seed, epoch, 1, item])


def _augment(
    image: Image.Image, item: int, pre: Preprocess, seed: int, epoch: int, scale: Any
) -> np.ndarray:
    return augment(image, pre, item_rng(seed, epoch, item), scale)


def train_batches(
    data: Split,
    indices: np.ndarray,
    pre: Preprocess,
    settings: Mapping[str, Any],
    order: np.ndarray,
    epoch: int,
) -> Iterable[Loaded]:
    """Epoch ``epoch``'s batches of the train items ``indices``, in ``order`` (positions in
    ``indices``), as ``settings`` (``TrainSettings``) say. Files are decoded and augmented
    by the loader's workers; images held in memory at one size are cropped, resized and
    flipped on the device, bit for bit as ``augment`` would, with weights drawn here."""
    positions = [order[c].tolist() for c in chunks(len(order), settings["batch_size"])]
    if isinstance(data, ArraySplit):
        return _array_batches(data, [indices[p] for p in positions], pre, settings, epoch)
    prepare = (
        functools.partial(
            _augment, pre=pre, seed=settings["seed"], epoch=epoch, scale=settings["crop_scale"]
        )
        if settings["augment"]
        else functools.partial(transform_item, pre=pre)
    )
    return loader(Items(data, indices, prepare), positions)


def _array_batches(
    data: ArraySplit,
    batches: list[np.ndarray],
    pre: Preprocess,
    settings: Mapping[str, Any],
    epoch: int,
) -> Iterator[Loaded]:
    height, width = data.images.shape[1:3]
    resizing = resize.plan(height, width, pre)
    for items in batches:
        if settings["augment"]:
            drawn = [
                crop(
                    width, height, item_rng(settings["seed"], epoch, int(i)), settings["crop_scale"]
                )
                for i in items
            ]
            boxes = np.array([box for box, _ in drawn], dtype=np.float64)
            flips = np.array([flip for _, flip in drawn], dtype=bool)
            resizing = resize.boxed(height, width, pre, boxes, flips)
        yield in_memory(data, items, resizing)
