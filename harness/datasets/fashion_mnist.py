"""Fashion-MNIST: 70,000 Zalando product images, 28x28 grayscale, 10 classes."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from harness.datasets.base import DATASETS, ArraySplit, Dataset, DatasetSpec, fingerprint
from harness.datasets.download import download
from harness.datasets.idx import read_idx
from harness.errors import DatasetError, DatasetUnavailable
from harness.paths import data_roots

NAME = "fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# file -> (md5 of the official .gz, from the upstream README;
#          sha256 of the decompressed idx bytes, measured on Debian's dataset-fashion-mnist
#          0.0~git20200523.55506a9-1, whose .gz files are recompressed but hold the same bytes)
FILES = {
    "train-images-idx3-ubyte.gz": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train-labels-idx1-ubyte.gz": (
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "t10k-images-idx3-ubyte.gz": (
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
}
SPLITS = {"train": "train", "test": "t10k"}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def candidate_dirs() -> list[Path]:
    return [root / NAME for root in data_roots()] + [DEBIAN_DIR]


def complete(directory: Path) -> bool:
    """Whether ``directory`` holds all four idx files."""
    return all((directory / name).is_file() for name in FILES)


def find_dir() -> Path:
    for directory in candidate_dirs():
        if complete(directory):
            return directory
    raise DatasetUnavailable(
        f"{NAME} is not on this machine (looked in {', '.join(map(str, candidate_dirs()))}); "
        "get it with `apt-get install dataset-fashion-mnist`, or put the four idx .gz files "
        f"in $SHELFBENCH_DATA/{NAME}/, or run `shelfbench data fetch {NAME}` where the "
        "network is reachable"
    )


@cache
def open_from(directory: Path) -> Dataset:
    """Read and verify the four files; the fingerprint is the hash of their content hashes."""
    arrays, hashes = {}, []
    for name, (_, sha256) in FILES.items():
        arrays[name], actual = read_idx(directory / name)
        if actual != sha256:
            raise DatasetError(
                f"{directory / name} is not the official Fashion-MNIST file "
                f"(content sha256 {actual[:12]}…, expected {sha256[:12]}…); get it again"
            )
        hashes.append(actual)
    splits = {
        split: ArraySplit(
            arrays[f"{prefix}-images-idx3-ubyte.gz"], arrays[f"{prefix}-labels-idx1-ubyte.gz"]
        )
        for split, prefix in SPLITS.items()
    }
    return Dataset(NAME, fingerprint([NAME, *hashes]), splits, CLASSES)


def fetch(dest: Path, base_url: str = URL) -> Path:
    """Download the official files into ``dest/fashion-mnist`` and verify them."""
    directory = dest / NAME
    for name, (md5, _) in FILES.items():
        download(base_url + name, directory / name, md5)
    open_from(directory)
    return directory


DATASETS.add(
    DatasetSpec(
        name=NAME,
        domain="fashion",
        classes=CLASSES,
        splits=tuple(SPLITS),
        protocol="split",
        open=lambda: open_from(find_dir()),
        source="Zalando Research, https://github.com/zalandoresearch/fashion-mnist (MIT)",
        fetch=fetch,
    )
)
