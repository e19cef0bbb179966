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


# Image and preprocessing sizes: both pass orders, upscaling and downscaling, crops.
SHAPES = {
    "height": st.integers(1, 160),
    "width": st.integers(1, 160),
    "size": st.integers(1, 120),
    "interpolation": st.sampled_from(sorted(FILTERS)),
    "crop_pct": st.sampled_from([1.0, 0.95, 0.9, 0.875]),
    "seed": st.integers(0, 2**16),
}


@pytest.mark.parametrize("dev", DEVICES)
@given(
    **SHAPES,
    mode=st.sampled_from(["shortest", "squash"]),
    gray=st.booleans(),
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


def as_uint8(tensor: torch.Tensor) -> np.ndarray:
    """A ToTensor'd image (mean 0, std 1) back to HWC uint8, exactly."""
    return (tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@given(**SHAPES)
def test_transform_equals_timms_eval_transform(height, width, size, interpolation, crop_pct, seed):
    """timm (the library the preprocessing comes from) is the oracle: same resize of the
    short side, same truncated long side, same centre-crop rounding."""
    from timm.data import create_transform

    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    timm_eval = create_transform(
        input_size=(3, size, size),
        crop_pct=crop_pct,
        interpolation=interpolation,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    pre = Preprocess(size, interpolation, (0.0,) * 3, (1.0,) * 3, crop_pct)
    expected = as_uint8(timm_eval(Image.fromarray(image)))
    np.testing.assert_array_equal(transform(Image.fromarray(image), pre), expected)


@pytest.mark.parametrize("mode", ["shortest", "squash"])
@pytest.mark.parametrize(("height", "width"), [(37, 64), (64, 37), (50, 50)])
def test_transform_equals_open_clips_eval_transform(mode, height, width):
    from open_clip.transform import image_transform

    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    clip_eval = image_transform(
        24, is_train=False, mean=(0, 0, 0), std=(1, 1, 1), resize_mode=mode, interpolation="bicubic"
    )
    pre = Preprocess(24, "bicubic", (0.0,) * 3, (1.0,) * 3, 1.0, mode)
    expected = as_uint8(clip_eval(Image.fromarray(image)))
    np.testing.assert_array_equal(transform(Image.fromarray(image), pre), expected)
