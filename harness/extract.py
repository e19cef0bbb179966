"""Batched embedding extraction: preprocessing, threads, device, progress bar (torch lazily)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock
from PIL import Image
from tqdm import tqdm

from harness import resize
from harness.backbones.base import Preprocess
from harness.datasets.base import ArraySplit, Split
from harness.errors import DatasetError, EmbeddingError

if TYPE_CHECKING:
    import torch

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def cpu_threads() -> int:
    """``$SHELFBENCH_THREADS``, else the usable cores shared among pytest-xdist workers."""
    if os.environ.get("SHELFBENCH_THREADS"):
        return max(1, int(os.environ["SHELFBENCH_THREADS"]))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, len(os.sched_getaffinity(0)) // workers)


def training_threads() -> int:
    """Threads for training on the CPU: ``$SHELFBENCH_THREADS``, else every usable core,
    whatever the number of pytest-xdist workers. Training sums floats in an order that
    depends on the thread count, so a fixed count makes a serial run and an ``-n 2`` run
    learn the same model."""
    if os.environ.get("SHELFBENCH_THREADS"):
        return max(1, int(os.environ["SHELFBENCH_THREADS"]))
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def cpu_training() -> Iterator[None]:
    """Train with ``training_threads()`` torch threads, one training at a time on this
    machine (other processes wait instead of oversubscribing the cores, which slowed a
    fine-tune 15x); on CUDA, nothing to hold."""
    if device() == "cuda":
        yield
        return
    import torch

    before = torch.get_num_threads()
    with FileLock(Path(tempfile.gettempdir()) / "shelfbench-cpu-training.lock"):
        torch.set_num_threads(training_threads())
        try:
            yield
        finally:
            torch.set_num_threads(before)


def loader_workers() -> int:
    """DataLoader worker processes: ``$SHELFBENCH_WORKERS``; else, on CUDA, all cores but
    two (the GPU's feeding thread and the pin-memory thread: on one H200 with 16 cores, 14
    workers decoded 8,100-9,300 images/s at 224 px where 8 decoded 5,900-6,100); on the
    CPU half the cores (the model's threads get the rest), none with two cores or fewer."""
    if os.environ.get("SHELFBENCH_WORKERS"):
        return max(0, int(os.environ["SHELFBENCH_WORKERS"]))
    cores = cpu_threads()
    if device() == "cuda":
        return max(0, cores - 2)
    return 0 if cores <= 2 else min(8, cores // 2)


def device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``; without an NVIDIA driver, no torch import."""
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


PRECISIONS = ("auto", "fp32", "bf16", "tf32")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 faster than fp32: it has AMX tiles (``amx_bf16``).
    AVX-512 BF16 alone is not enough: on a 2-vCPU Xeon with ``avx512_bf16`` and no AMX
    (2026-11-30), a 2048³ bf16 matmul ran at 171 GFLOP/s against fp32's 316, and ViT-B/16
    embedded 4.5 against 7.3 images/s (only depthwise-conv Lite0 gained, 1.2x). With AMX,
    ViT-B/16 embedded 2.7x faster; without any bf16 instructions (AVX2), bf16 autocast ran
    ~10x slower."""
    return "amx_bf16" in cpu_flags()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; none where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(flags.partition(":")[2].split())


# Overrides what ``auto`` resolves to on this machine (a suite's explicit precision wins).
PRECISION_ENV = "SHELFBENCH_PRECISION"


def resolve_precision(requested: str) -> str:
    """The precision a cell runs at on this machine: ``auto`` is ``$SHELFBENCH_PRECISION``
    where set, else bf16 on CUDA and on CPUs with AMX, fp32 elsewhere; ``tf32``
    (TensorFloat-32 matmuls) exists on CUDA only."""
    dev = device()
    if requested == "auto":
        requested = os.environ.get(PRECISION_ENV) or (
            "bf16" if dev == "cuda" or cpu_has_bf16() else "fp32"
        )
        if requested not in PRECISIONS[1:]:
            raise EmbeddingError(
                f"${PRECISION_ENV} = {requested!r}: must be one of {', '.join(PRECISIONS[1:])}"
            )
    if requested == "tf32" and dev != "cuda":
        raise EmbeddingError(
            "precision tf32 is a CUDA precision and this machine has no GPU; use fp32, bf16 "
            "or auto in the suite's [profile]"
        )
    return requested


def grad_off(precision: str) -> contextlib.AbstractContextManager[None]:
    """No autograd for extraction: ``torch.inference_mode()`` at fp32 and tf32, but
    ``torch.no_grad()`` under bf16 autocast, whose cache of bf16 weight copies torch
    (>= 2.10, pytorch#165068) skips under inference_mode: every batch then casts every
    weight again, and an open_clip ViT-B-32 embedded at 36 images/s against 120 under
    no_grad on an AMX Xeon (2026-11-30)."""
    import torch

    return torch.no_grad() if precision == "bf16" else torch.inference_mode()


@contextlib.contextmanager
def computing_at(precision: str, dev: str) -> Iterator[None]:
    """bf16 autocast, TF32 matmuls and convolutions, or plain fp32, for the block."""
    import torch

    if precision == "bf16":
        with torch.autocast(dev, dtype=torch.bfloat16):
            yield
        return
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


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


def progress(total: int, desc: str) -> tqdm:
    """A progress bar over images on stderr; sparse (every 15 s) when it is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 15,
        dynamic_ncols=True,
    )


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
        items,
        batch_sampler=batches,
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
        resizing = resize.plan(*split.images.shape[1:3], pre)
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
    """Yield ``(indices, float32 embeddings)`` per batch, without autograd (``grad_off``)
    at ``precision`` (``resolve_precision``'s answer). An item that cannot be read gets a row
    of NaN (the cache then knows it was tried), and a warning with its path. A batch's
    embeddings are read back after the next batch is queued, so that the device computes
    while this process prepares batches and writes the cache."""
    import torch

    torch.set_num_threads(cpu_threads())
    dev = device()
    model = model.to(dev, memory_format=torch.channels_last)
    buffer = batch_buffer(batch_size, pre, dev)
    bar = progress(len(indices), desc)
    pending: tuple[np.ndarray, torch.Tensor] | None = None
    with grad_off(precision), computing_at(precision, dev), bar:
        for batch in load_batches(split, indices, pre, batch_size):
            for message in batch.bad.values():
                bar.write(f"shelfbench: skipped {message}", file=sys.stderr)
            if batch.bad:
                bad = np.array(sorted(batch.bad), dtype=np.int64)
                yield bad, np.full((len(bad), model.num_features), np.nan, np.float32)
            if len(batch.rows):
                x = to_tensor(batch.pixels(dev), pre, dev, buffer)
                out = _forward(model, x, desc)
                if pending is not None:
                    yield _on_host(*pending, desc)
                pending = batch.rows, out
            bar.update(len(batch.rows) + len(batch.bad))
        if pending is not None:
            yield _on_host(*pending, desc)


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
    batch_size: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, text embeddings)``: ``encode`` (an adapter's text encoder) of the
    prompts ``rows``, under inference mode."""
    import torch

    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            text = encode([prompts[i] for i in chunk]).float().cpu().numpy()
            yield chunk, finite(text, desc)
