"""Batched embedding extraction: preprocessing, threads, device, progress bar (torch lazily)."""

from __future__ import annotations

import collections
import functools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from harness import resize
from harness.backbones.base import Preprocess
from harness.backbones.build import width
from harness.datasets.base import ArraySplit, Split
from harness.errors import DatasetError, EmbeddingError
from harness.progress import progress_bar
from harness.runtime import cpu_threads, device, extracting, loader_workers

if TYPE_CHECKING:
    import torch

# Batches queued on the device beyond the one being read back (a hiccup of the host, a
# cache part being written, does not leave the device idle).
IN_FLIGHT = 2

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def transform(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """``shortest``: resize the short side to ``floor(size / crop_pct)`` (as timm does) and
    centre-crop; ``squash``: resize to ``size`` x ``size`` (as open_clip's squash mode)."""
    new_w, new_h, left, top = resize.layout(*image.size, pre)
    image = image.resize((new_w, new_h), RESAMPLE[pre.interpolation])
    return np.asarray(image.crop((left, top, left + pre.size, top + pre.size)))


def to_tensor(
    images: list[np.ndarray] | torch.Tensor,
    pre: Preprocess,
    dev: str = "cpu",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 HWC images (a list, or an NHWC uint8 tensor) -> normalised float32 NCHW batch
    in channels_last memory on device ``dev``. The uint8 pixels travel (4x fewer bytes than
    floats) and are normalised where the model runs; ``out``, a float32 channels_last
    buffer at least as long as the batch, is reused instead of a new allocation per batch."""
    import torch

    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.stack(images))
    x = x.to(dev, non_blocking=True).permute(0, 3, 1, 2)  # channels_last strides
    batch = x.float() if out is None else out[: len(x)].copy_(x)
    mean = torch.tensor(pre.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=dev).view(1, 3, 1, 1)
    return batch.div_(255).sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def batch_buffer(batch_size: int, pre: Preprocess, dev: str) -> torch.Tensor:
    """The float32 channels_last buffer ``to_tensor`` fills, once per extraction."""
    import torch

    shape = (batch_size, 3, pre.size, pre.size)
    return torch.empty(shape, device=dev).contiguous(memory_format=torch.channels_last)


class Loaded:
    """A batch's items as one NHWC uint8 tensor (shared memory when it comes from a
    worker), and the items that could not be read. With a ``plan`` the images are still at
    their stored size and are resized where the model runs (``pixels``)."""

    def __init__(
        self,
        rows: np.ndarray,
        images: torch.Tensor,
        bad: dict[int, str],
        plan: resize.Plan | None = None,
    ) -> None:
        self.rows, self.images, self.bad, self.plan = rows, images, bad, plan

    def pin_memory(self) -> Loaded:
        """Page-locked images, for an asynchronous copy to the GPU (DataLoader calls it)."""
        self.images = self.images.pin_memory()
        return self

    def pixels(self, dev: str) -> torch.Tensor:
        """The batch on ``dev`` as NHWC uint8 at the model's input size."""
        images = self.images.to(dev, non_blocking=True)
        return images if self.plan is None else self.plan.apply(images)


class Items:
    """The map-style dataset the DataLoader's workers read: item ``rows[k]``, decoded and
    made into model pixels by ``prepare(image, item)`` (module-level, so workers can
    unpickle it), or the reason it could not be read."""

    def __init__(
        self, split: Split, rows: np.ndarray, prepare: Callable[[Image.Image, int], np.ndarray]
    ) -> None:
        self.split, self.rows, self.prepare = split, rows, prepare

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray | None, str]:
        index = int(self.rows[k])
        try:
            return index, self.prepare(self.split.image(index), index), ""
        except DatasetError as exc:
            return index, None, str(exc)


def _collate(items: list[tuple[int, np.ndarray | None, str]]) -> Loaded:
    import torch

    good = [(i, image) for i, image, _ in items if image is not None]
    images = torch.from_numpy(np.stack([image for _, image in good])) if good else None
    return Loaded(
        np.array([i for i, _ in good], dtype=np.int64),
        images if images is not None else torch.empty((0, 0, 0, 3), dtype=torch.uint8),
        {i: message for i, image, message in items if image is None},
    )


def loader(items: Items, batches: Sequence[Sequence[int]]) -> Iterable[Loaded]:
    """``items`` in ``batches`` (positions in ``items.rows``), prepared by
    ``loader_workers()`` processes (in this one if none), pinned on CUDA, in order."""
    import torch

    workers = loader_workers()
    return torch.utils.data.DataLoader(
        items,  # type: ignore[arg-type]  # a map-style dataset by protocol, not by base class
        batch_sampler=batches,  # type: ignore[arg-type]  # any iterable of index lists
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        pin_memory=device() == "cuda",
    )


def transform_item(image: Image.Image, index: int, pre: Preprocess) -> np.ndarray:
    """``transform``, as ``Items`` calls it (every item alike)."""
    return transform(image, pre)


def chunks(n: int, size: int) -> list[range]:
    """Positions ``0..n`` in consecutive batches of ``size``."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def in_memory(split: ArraySplit, items: np.ndarray, plan: resize.Plan) -> Loaded:
    """A batch of in-memory ``items`` at their stored size, to be resized by ``plan`` where
    the model runs; pinned on CUDA."""
    import torch

    batch = Loaded(items.astype(np.int64), torch.from_numpy(split.images[items]), {}, plan)
    return batch.pin_memory() if device() == "cuda" else batch


def load_batches(
    split: Split, rows: np.ndarray, pre: Preprocess, batch_size: int
) -> Iterator[Loaded]:
    """Batches of ``rows`` decoded and resized by ``loader_workers()`` processes (in this
    one if none); an unreadable item is reported in ``Loaded.bad``, never raised. Images
    held in memory at one size skip PIL: ``Loaded.pixels`` resizes them, bit for bit as
    ``transform`` would, on the device."""
    if isinstance(split, ArraySplit):
        height, width = split.images.shape[1:3]
        resizing = resize.plan(height, width, pre)
        for chunk in chunks(len(rows), batch_size):
            yield in_memory(split, np.asarray(rows[chunk.start : chunk.stop]), resizing)
        return
    prepare = functools.partial(transform_item, pre=pre)
    yield from loader(Items(split, rows, prepare), chunks(len(rows), batch_size))


def finite(vectors: np.ndarray, desc: str) -> np.ndarray:
    """``vectors`` if every value is finite. NaN or inf from a model is not an unreadable
    image (those are NaN rows the cache writes itself): the model diverged or its weights
    are broken, and nothing it produced may be cached."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise EmbeddingError(
            f"{desc}: the model output NaN or inf for {int(bad.sum())} of {len(vectors)} "
            "inputs: it diverged (a fine-tune whose learning rate is too high?) or its "
            "weights hold NaN; nothing was cached"
        )
    return vectors


def embed_batches(
    model: torch.nn.Module,
    split: Split,
    indices: np.ndarray,
    pre: Preprocess,
    batch_size: int,
    desc: str,
    precision: str = "fp32",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, float32 embeddings)`` per batch, each forward pass run as
    ``extracting`` says at ``precision`` (``resolve_precision``'s answer). An item that
    cannot be read gets a row of NaN (the cache then knows it was tried), and a warning with
    its path. A batch's embeddings are read back once ``IN_FLIGHT`` later batches are
    queued, so that the device computes while this process prepares batches and writes the
    cache (on one stream, a batch's input buffer is overwritten only after its forward has
    run)."""
    import torch

    torch.set_num_threads(cpu_threads())
    dev = device()
    model = model.to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]
    buffer = batch_buffer(batch_size, pre, dev)
    bar = progress_bar(desc, "img", len(indices))
    pending: collections.deque[tuple[np.ndarray, torch.Tensor]] = collections.deque()
    with extracting(precision, dev), bar:
        for batch in load_batches(split, indices, pre, batch_size):
            for message in batch.bad.values():
                bar.write(f"shelfbench: skipped {message}", file=sys.stderr)
            if batch.bad:
                bad = np.array(sorted(batch.bad), dtype=np.int64)
                yield bad, np.full((len(bad), width(model)), np.nan, np.float32)
            if len(batch.rows):
                x = to_tensor(batch.pixels(dev), pre, dev, buffer)
                pending.append((batch.rows, _forward(model, x, desc)))
                if len(pending) > IN_FLIGHT:
                    yield _on_host(*pending.popleft(), desc)
            bar.update(len(batch.rows) + len(batch.bad))
        while pending:
            yield _on_host(*pending.popleft(), desc)


def _on_host(rows: np.ndarray, out: torch.Tensor, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch's embeddings read back as float32 numpy (waits for the device), checked."""
    return rows, finite(out.float().cpu().numpy(), desc)


def _forward(model: torch.nn.Module, x: torch.Tensor, desc: str) -> torch.Tensor:
    """``model(x)`` (never a view of ``x``, whose buffer the next batch overwrites), or one
    line saying why the model cannot take this batch."""
    try:
        out = model(x)
        return (
            out.clone()
            if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
            else out
        )
    except (RuntimeError, AssertionError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EmbeddingError(
            f"{desc}: the model failed on a batch of {tuple(x.shape)}: {reason}; "
            "check the suite's image_size against the backbone's input size"
        ) from exc


def text_batches(
    encode: Callable[[list[str]], torch.Tensor],
    prompts: list[str],
    rows: np.ndarray,
    desc: str,
    precision: str,
    batch_size: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, text embeddings)``: ``encode`` (an adapter's text encoder) of the
    prompts ``rows``, as ``extracting`` runs a forward pass at ``precision``, as the
    images are."""
    with extracting(precision, device()):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            text = encode([prompts[i] for i in chunk]).float().cpu().numpy()
            yield chunk, finite(text, desc)
