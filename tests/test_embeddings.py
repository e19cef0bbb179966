"""Embedding extraction through the cache: keys carry provenance, a hit loads no model."""

import numpy as np
import pytest

from harness import embeddings
from harness.backbones import BACKBONES
from harness.datasets import open_dataset
from harness.errors import EmbeddingError


@pytest.fixture
def setup(tmp_path):
    dataset = open_dataset("synthetic-products")
    spec = BACKBONES.get("test-efficientnet")
    return dataset, spec, spec.preprocess.resized(48), tmp_path


def test_a_cache_hit_never_loads_the_model(setup, monkeypatch):
    dataset, spec, pre, cache = setup
    first = embeddings.embed(dataset, "test", np.arange(10), spec, pre, 4, cache)
    assert first.computed == 10

    def refuse(*args):
        raise AssertionError("model loaded on a cache hit")

    monkeypatch.setattr(embeddings, "load_model", refuse)
    again = embeddings.embed(dataset, "test", np.arange(10), spec, pre, 4, cache)
    assert again.computed == 0
    np.testing.assert_array_equal(first.vectors, again.vectors)
    np.testing.assert_array_equal(again.labels, dataset.split("test").labels[:10])


def test_image_and_text_embeddings_build_the_model_once(tmp_path, monkeypatch):
    """A zero-shot cell embeds images, then prompts, with the same open_clip model."""
    from harness.backbones import build

    spec = BACKBONES.get("test-clip")
    built = []

    def counted(*args):
        built.append(args)
        return build_model(*args)

    build_model = build.build_model
    monkeypatch.setattr(build, "build_model", counted)
    embeddings._load_model.cache_clear()
    embeddings.embed(
        open_dataset("synthetic-products"), "test", np.arange(2), spec, spec.preprocess, 2, tmp_path
    )
    embeddings.embed_texts(spec, ["a photo of a shoe."], tmp_path)
    assert len(built) == 1


def test_prompts_are_embedded_at_the_cells_precision(tmp_path):
    """A bf16 cell's prompts go through the text tower in bf16, as its images go through
    the image tower (CLIP_benchmark's ``amp`` does both), each precision cached apart."""
    spec, prompts = BACKBONES.get("test-clip"), ["a photo of a shoe.", "a photo of a bag."]
    fp32 = embeddings.embed_texts(spec, prompts, tmp_path, "fp32")
    bf16 = embeddings.embed_texts(spec, prompts, tmp_path, "bf16")
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    np.testing.assert_array_equal(embeddings.embed_texts(spec, prompts, tmp_path, "fp32"), fp32)


def test_batching_does_not_change_embeddings(setup):
    dataset, spec, pre, cache = setup
    one = embeddings.embed(dataset, "test", np.arange(6), spec, pre, 1, cache / "a")
    six = embeddings.embed(dataset, "test", np.arange(6), spec, pre, 6, cache / "b")
    np.testing.assert_allclose(one.vectors, six.vectors, atol=1e-5)


def test_key_holds_every_provenance_field(setup):
    dataset, spec, pre, _ = setup
    key = embeddings.embedding_key(dataset, "train", spec, embeddings.resolve(spec), pre, "cpu")
    assert key["dataset_fingerprint"] == dataset.fingerprint
    assert key["preprocess"]["size"] == 48 and key["weights_sha256"] == "random-init:seed=0"
    # torch and Pillow embed every model; the backbone's library record names its own
    assert set(key["libraries"]) == {"torch", "pillow", "timm", "torchvision"}
    assert {"embedding_version", "split", "backbone", "precision", "device"} <= set(key)
    other = embeddings.embedding_key(
        dataset, "train", spec, embeddings.resolve(spec), pre.resized(64), "cpu"
    )
    assert other != key


def test_a_model_that_rejects_the_input_size_fails_in_one_line(tmp_path):
    dataset = open_dataset("synthetic-products")
    spec = BACKBONES.get("test-vit")
    with pytest.raises(EmbeddingError, match="image_size") as err:
        embeddings.embed(
            dataset, "test", np.arange(2), spec, spec.preprocess.resized(50), 2, tmp_path
        )
    assert "\n" not in str(err.value)
