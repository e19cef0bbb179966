"""Pillow's resize, bit for bit, on batches of uint8 images in torch (torch lazily).

Pillow resizes an 8-bit image in two passes, columns then rows (from Pillow 13, rows
first where the height shrinks more than twice as much as the width); each output pixel is
a fixed-point weighted sum of input pixels (``precompute_coeffs`` and
``normalize_coeffs_8bpc`` in its ``Resample.c``), rounded and clipped to uint8 between the
passes. The weights below are computed the same way, in the same order, so a pass is one
matrix product whose every partial sum is an integer below 2**53: exact in float64 on any
device, in any summation order. Images of one size (in-memory arrays such as Fashion-MNIST)
then reach the model without a PIL call per image, resized where the model runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import PIL

from harness.backbones.base import Preprocess

if TYPE_CHECKING:
    import torch

PRECISION_BITS = 22  # Pillow's, for 8-bit images: 32 - 8 - 2
ROWS_FIRST_SINCE = 13  # the Pillow major version that may run the vertical pass first


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


# interpolation -> (support, filter), as Pillow defines them
FILTERS: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {
    "bicubic": (2.0, _bicubic),
    "bilinear": (1.0, _bilinear),
}


def weights(
    in_size: int,
    out_size: int,
    interpolation: str,
    start: float | np.ndarray = 0.0,
    stop: float | np.ndarray | None = None,
) -> np.ndarray:
    """The ``(out_size, in_size)`` fixed-point weights (scaled by 2**22) with which Pillow
    resamples the span ``start..stop`` (default: all) of ``in_size`` pixels to ``out_size``;
    ``(n, out_size, in_size)`` for ``n`` spans given as arrays."""
    support, kernel = FILTERS[interpolation]
    in0 = np.asarray(start, np.float32)[..., None]  # Pillow passes the box as C floats
    in1 = np.asarray(in_size if stop is None else stop, np.float32)[..., None]
    scale = (in1 - in0).astype(np.float64) / out_size
    filterscale = np.maximum(scale, 1.0)
    reach = support * filterscale
    taps = int(np.ceil(reach).max()) * 2 + 1
    center = in0 + (np.arange(out_size) + 0.5) * scale  # (..., out)
    first = np.maximum(np.trunc(center - reach + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(center + reach + 0.5), in_size).astype(np.int64) - first
    x = np.arange(taps)
    used = x < count[..., None]
    at = (x + first[..., None] - center[..., None] + 0.5) * (1.0 / filterscale)[..., None]
    w = np.where(used, kernel(at), 0.0)
    total = np.zeros(center.shape)
    for tap in range(taps):  # summed in Pillow's order
        total += w[..., tap]
    w = w / np.where(total == 0.0, 1.0, total)[..., None]
    fixed = np.trunc(w * (1 << PRECISION_BITS) + np.where(w < 0, -0.5, 0.5))
    out = np.zeros((*center.shape, in_size + taps))
    np.put_along_axis(out, first[..., None] + x, np.where(used, fixed, 0.0), axis=-1)
    return out[..., :in_size]


@dataclass(frozen=True, eq=False)
class Plan:
    """How one input size becomes the model's input: fixed-point row and column weights
    (``None`` where Pillow skips that pass), as float64 numpy arrays, and the pass order."""

    rows: np.ndarray | None
    cols: np.ndarray | None
    rows_first: bool = False
    _on: dict[str, tuple[torch.Tensor | None, ...]] = field(default_factory=dict, repr=False)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``apply`` with these weights on ``images``' device (copied there once)."""
        dev = str(images.device)
        if dev not in self._on:
            import torch

            weights = (self.rows, self.cols)
            self._on[dev] = tuple(
                None if w is None else torch.from_numpy(w).to(dev) for w in weights
            )
        rows, cols = self._on[dev]
        return apply(images, rows, cols, self.rows_first)


def rows_first(height: int, width: int, new_h: int, new_w: int) -> bool:
    """Whether Pillow runs the vertical pass first for this resize (``ImagingResampleInner``)."""
    if int(PIL.__version__.split(".")[0]) < ROWS_FIRST_SINCE:
        return False
    return height - new_h > 0 and height - new_h > (width - new_w) * 2


def layout(width: int, height: int, pre: Preprocess) -> tuple[int, int, int, int]:
    """``(new_w, new_h, left, top)``: the size a ``width`` x ``height`` image is resized to
    and where the centre crop starts, as torchvision's ``Resize(int)`` and ``CenterCrop``
    compute them in timm's and open_clip's eval transforms. ``shortest``: the short side
    to ``floor(size / crop_pct)``, the long side in proportion, truncated; ``squash``:
    ``size`` x ``size``."""
    if pre.resize == "squash":
        new_w = new_h = pre.size
    else:
        short = math.floor(pre.size / pre.crop_pct)
        if width <= height:
            new_w, new_h = short, int(short * height / width)
        else:
            new_w, new_h = int(short * width / height), short
    return new_w, new_h, round((new_w - pre.size) / 2.0), round((new_h - pre.size) / 2.0)


def plan(height: int, width: int, pre: Preprocess) -> Plan:
    """The resize (and centre crop) of ``extract.transform`` for ``height`` x ``width``
    images: only the output pixels the crop keeps are computed."""
    interpolation = pre.interpolation
    new_w, new_h, left, top = layout(width, height, pre)
    keep_rows, keep_cols = slice(top, top + pre.size), slice(left, left + pre.size)
    rows = weights(height, new_h, interpolation)[keep_rows] if new_h != height else None
    cols = weights(width, new_w, interpolation)[keep_cols] if new_w != width else None
    if rows is None and (top or new_h != pre.size):
        rows = np.eye(height)[keep_rows] * (1 << PRECISION_BITS)
    if cols is None and (left or new_w != pre.size):
        cols = np.eye(width)[keep_cols] * (1 << PRECISION_BITS)
    return Plan(rows, cols, rows_first(height, width, new_h, new_w))


def boxed(height: int, width: int, pre: Preprocess, boxes: np.ndarray, flips: np.ndarray) -> Plan:
    """Per image, Pillow's ``resize((size, size), box=boxes[i])`` of ``height`` x ``width``
    images, mirrored left to right where ``flips[i]``: one pair of weights per image."""
    size, interpolation = pre.size, pre.interpolation
    cols = weights(width, size, interpolation, boxes[:, 0], boxes[:, 2])
    cols[flips] = cols[flips, ::-1]
    rows = weights(height, size, interpolation, boxes[:, 1], boxes[:, 3])
    return Plan(rows, cols, rows_first(height, width, size, size))


def _round(x: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8``: add half, shift out the fraction bits, clip to 0..255."""
    half = float(1 << (PRECISION_BITS - 1))
    return x.add_(half).div_(float(1 << PRECISION_BITS)).floor_().clamp_(0, 255)


def _cols(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    t = w.transpose(-1, -2)
    return _round(x @ (t.unsqueeze(1) if t.ndim == 3 else t))


def _rows(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return _round((w.unsqueeze(1) if w.ndim == 3 else w) @ x)


def apply(
    images: torch.Tensor,
    rows: torch.Tensor | None,
    cols: torch.Tensor | None,
    rows_first: bool = False,
) -> torch.Tensor:
    """Resize NHWC (or NHW grayscale) uint8 ``images`` with fixed-point weights on their
    device: ``rows`` (out_h, in_h) and ``cols`` (out_w, in_w), float64, or one pair per
    image with a leading batch dimension. Returns NHWC uint8 with three channels."""
    import torch

    x = images if images.ndim == 4 else images.unsqueeze(-1)
    x = x.permute(0, 3, 1, 2).double()  # N, C, H, W
    passes = [(_rows, rows), (_cols, cols)] if rows_first else [(_cols, cols), (_rows, rows)]
    for resample, w in passes:
        if w is not None:
            x = resample(x, w)
    out = x.to(torch.uint8).permute(0, 2, 3, 1)
    return out.expand(-1, -1, -1, 3) if out.shape[-1] == 1 else out
