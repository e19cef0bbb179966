"""The dataset layer: idx parsing, Fashion-MNIST discovery and verification, synthetic data."""

import gzip
import hashlib

import numpy as np
import pytest

from harness.datasets import DATASETS, ArraySplit, fashion_mnist, open_dataset, subset, synthetic
from harness.datasets.download import download
from harness.datasets.idx import read_idx
from harness.errors import DatasetError, DatasetUnavailable


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    data, sha256 = read_idx(tmp_path / "a.gz")
    np.testing.assert_array_equal(data, array)
    assert sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (idx_bytes(np.zeros((2, 3), np.uint8))[:-1], "truncated"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "magic"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, raw, message):
    (tmp_path / "bad").write_bytes(raw)
    with pytest.raises(DatasetError, match=message):
        read_idx(tmp_path / "bad")


def write_lookalike(directory):
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in fashion_mnist.FILES:
        n = 6 if name.startswith("train") else 3
        array = rng.integers(0, 255, (n, 28, 28)) if "images" in name else np.arange(n) % 10
        (directory / name).write_bytes(gzip.compress(idx_bytes(array)))


def test_missing_fashion_mnist_says_the_three_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setenv("SHELFBENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetUnavailable) as err:
        open_dataset("fashion-mnist")
    message = str(err.value)
    assert "\n" not in message
    for way in (
        "apt-get install dataset-fashion-mnist",
        "$SHELFBENCH_DATA/fashion-mnist",
        "shelfbench data fetch fashion-mnist",
    ):
        assert way in message


def test_shelfbench_data_takes_precedence_and_is_verified(tmp_path, monkeypatch):
    write_lookalike(tmp_path / "fashion-mnist")
    monkeypatch.setenv("SHELFBENCH_DATA", str(tmp_path))
    assert fashion_mnist.find_dir() == tmp_path / "fashion-mnist"
    with pytest.raises(DatasetError, match="not the official Fashion-MNIST file"):
        open_dataset("fashion-mnist")


@pytest.mark.usefixtures("real_fashion_mnist")
def test_real_fashion_mnist_has_the_published_splits(monkeypatch):
    monkeypatch.delenv("SHELFBENCH_DATA", raising=False)
    dataset = open_dataset("fashion-mnist")
    train, test = dataset.split("train"), dataset.split("test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    image = train.image(0)
    assert (image.mode, image.size) == ("RGB", (28, 28))
    # The fingerprint is part of every cache key: changing how it is computed orphans caches.
    assert dataset.fingerprint.startswith("f2140f8ebd31")


def test_synthetic_products_are_deterministic_and_balanced():
    first = open_dataset("synthetic-products")
    synthetic.open_synthetic.cache_clear()
    again = open_dataset("synthetic-products")
    assert first is not again and first.fingerprint == again.fingerprint
    for split, per_class in synthetic.COUNTS.items():
        labels = first.split(split).labels
        assert np.bincount(labels).tolist() == [per_class] * 8
    # A change to the generator must bump VERSION: the fingerprint is in every cache key.
    assert first.fingerprint.startswith("f1d9bfbafbbc")


def test_the_two_synthetic_sets_share_shapes_not_colours():
    products = open_dataset("synthetic-products").split("train")
    shelf = open_dataset("synthetic-shelf").split("train")
    assert DATASETS.get("synthetic-shelf").classes[0] == "green disc"
    assert not np.array_equal(products.images, shelf.images)
    np.testing.assert_array_equal(products.labels, shelf.labels)


def test_synthetic_classes_differ_in_colour():
    train = open_dataset("synthetic-products").split("train")
    means = [train.images[train.labels == c].reshape(-1, 3).mean(0) for c in range(8)]
    red, blue = np.mean(means[0::2], axis=0), np.mean(means[1::2], axis=0)
    assert red[0] > blue[0] and blue[2] > red[2]


def test_subset_is_a_sorted_seeded_sample():
    a = subset(1000, 100, seed=3)
    assert len(a) == len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, subset(1000, 100, seed=3))
    assert not np.array_equal(a, subset(1000, 100, seed=4))
    np.testing.assert_array_equal(subset(5, None, 0), np.arange(5))
    np.testing.assert_array_equal(subset(5, 10, 0), np.arange(5))


def test_download_verifies_md5_before_the_file_appears(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"product images")
    good = hashlib.md5(b"product images").hexdigest()
    with pytest.raises(DatasetError, match="differs from the published"):
        download(source.as_uri(), tmp_path / "out" / "bad.bin", md5="0" * 32)
    assert list((tmp_path / "out").iterdir()) == []
    assert download(source.as_uri(), tmp_path / "out" / "ok.bin", md5=good).read_bytes() == (
        b"product images"
    )


def test_every_registered_dataset_declares_its_splits_and_protocol():
    from harness.datasets.base import PROTOCOLS
    from harness.datasets.formats import TABLES as FORMATS
    from harness.datasets.public import FACTS

    for spec in DATASETS:
        if spec.source.partition(" at ")[0] in FORMATS:
            continue  # a suite's own dataset, registered by another test
        assert "train" in spec.splits and "test" in spec.splits and spec.protocol in PROTOCOLS
        # Classes come from the entry or, for file datasets, from the files.
        assert spec.classes or spec.name in FACTS


@pytest.mark.parametrize(
    "images", [np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4, 4), np.uint8)]
)
def test_in_memory_images_are_uint8_gray_or_rgb(images):
    """The device-side resize and PIL read them the same way only then."""
    with pytest.raises(DatasetError, match=r"must be uint8 \(N, H, W\) or \(N, H, W, 3\)"):
        ArraySplit(images, np.zeros(2, np.int64))
