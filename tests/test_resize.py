"""harness.resize: Pillow's 8-bit resize, bit for bit, with Pillow itself as the oracle."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from harness import resize
from harness.backbones.base import Preprocess
from harness.extract import transform

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# The weights run where the model runs: check every device this machine has.
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def tensors(*weights: np.ndarray | None, dev: str = "cpu") -> list[torch.Tensor | None]:
    return [None if w is None else torch.from_numpy(w).to(dev) for w in weights]


@pytest.mark.parametrize("dev", DEVICES)
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    size=st.integers(1, 120),
    interpolation=st.sampled_from(sorted(FILTERS)),
    crop_pct=st.sampled_from([1.0, 0.95, 0.9, 0.875]),
    mode=st.sampled_from(["shortest", "squash"]),
    gray=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_planned_resize_equals_transform(
    dev, height, width, size, interpolation, crop_pct, mode, gray, seed
):
    """Every size, both filters, both resize modes, crops, grayscale and RGB arrays: the
    pixels equal ``extract.transform`` on the PIL image, exactly. Sizes cover both pass
    orders (Pillow 13 runs the vertical pass first when the height shrinks most)."""
    shape = (3, height, width) if gray else (3, height, width, 3)
    images = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    pre = Preprocess(size, interpolation, (0.5,) * 3, (0.5,) * 3, crop_pct, mode)
    expected = np.stack([transform(Image.fromarray(i).convert("RGB"), pre) for i in images])
    plan = resize.plan(height, width, pre)
    weights = tensors(plan.rows, plan.cols, dev=dev)
    got = resize.apply(torch.from_numpy(images).to(dev), *weights, plan.rows_first)
    np.testing.assert_array_equal(got.cpu().numpy(), expected)


@pytest.mark.parametrize("interpolation", sorted(FILTERS))
def test_weights_with_a_box_equal_pillow(interpolation):
    """Per-image weights (a batch of boxes and flips, as augmentation draws them) equal
    Pillow's ``resize(size, box=...)``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 31), dtype=np.uint8)
    boxes = [(0, 0, 31, 28), (3, 5, 20, 27), (10, 0, 31, 9), (1, 1, 30, 27)]
    flips = [False, True, False, True]
    rows, cols, expected = [], [], []
    for image, box, flip in zip(images, boxes, flips, strict=True):
        out = Image.fromarray(image).convert("RGB").resize((40, 40), FILTERS[interpolation], box)
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        expected.append(np.asarray(out))
        w = resize.weights(31, 40, interpolation, box[0], box[2])
        rows.append(resize.weights(28, 40, interpolation, box[1], box[3]))
        cols.append(w[::-1] if flip else w)
    got = resize.apply(torch.from_numpy(images), *tensors(np.stack(rows), np.stack(cols)))
    np.testing.assert_array_equal(got.numpy(), np.stack(expected))
